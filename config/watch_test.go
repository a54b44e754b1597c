package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A text table follows its file: a new version renamed into place is
// read once it has settled, a half-written or broken one keeps the old
// contents (and says so), a removed file too.
func TestTableFollowsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "transport")
	clock := time.Now()
	// write puts a new version in place, last modified age before the
	// next lookup's clock.
	write := func(text string, age time.Duration) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := clock.Add(checkEvery - age)
		os.Chtimes(tmp, mt, mt)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("a.test smtp:[192.0.2.1]\n", time.Hour)
	tb, err := OpenTable("hash:" + path)
	if err != nil {
		t.Fatal(err)
	}
	ft := tb.(*fileTable)
	ft.now = func() time.Time { return clock }
	var events []string
	fn := func(file string, err error) {
		if err != nil {
			events = append(events, err.Error())
		} else {
			events = append(events, "ok")
		}
	}
	TableEvents.Store(&fn)
	defer TableEvents.Store(nil)
	lookup := func(key string) string {
		clock = clock.Add(checkEvery)
		v, _, _ := tb.Lookup(key)
		return v
	}

	write("a.test smtp:[192.0.2.2]\n", 0) // just written: not settled yet
	if v := lookup("a.test"); v != "smtp:[192.0.2.1]" {
		t.Errorf("unsettled change read: %q", v)
	}
	write("a.test smtp:[192.0.2.2]\n", time.Hour)
	if v := lookup("a.test"); v != "smtp:[192.0.2.2]" {
		t.Errorf("after the change: %q", v)
	}
	write("a.test smtp:[192.0.2.3]\nbroken\n", time.Hour)
	if v := lookup("a.test"); v != "smtp:[192.0.2.2]" {
		t.Errorf("a broken file replaced the table: %q", v)
	}
	os.Remove(path)
	if v := lookup("a.test"); v != "smtp:[192.0.2.2]" {
		t.Errorf("a removed file emptied the table: %q", v)
	}
	if len(events) != 3 || events[0] != "ok" || events[1] == "ok" || events[2] == "ok" {
		t.Errorf("events %q", events)
	}
}
