package config

import "testing"

// Every parameter is described, so that holdfast.cf(5), generated from the
// table, documents all of them.
func TestEveryParameterDescribed(t *testing.T) {
	for name := range params {
		if descriptions[name] == "" {
			t.Errorf("parameter %s has no description: add one to config/describe.go", name)
		}
	}
	for name := range descriptions {
		if params[name] == nil {
			t.Errorf("config/describe.go describes %s, which is not in the parameter table", name)
		}
	}
}
