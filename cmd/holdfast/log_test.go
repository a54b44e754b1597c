package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mta/holdfast/config"
)

func TestNewLoggerJSON(t *testing.T) {
	var buf bytes.Buffer
	log, _, _ := newLogger(config.Default(), &buf)
	log.Info().Str("queue_id", "abc123").Str("status", "sent").Msg("delivered")
	log.Debug().Msg("hidden at info level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got %q", buf.String())
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if ev["level"] != "info" || ev["message"] != "delivered" || ev["queue_id"] != "abc123" || ev["status"] != "sent" {
		t.Errorf("event %v", ev)
	}
	ts, _ := ev["time"].(string)
	if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("time %q: %v", ts, err)
	}
}

func TestNewLoggerConsole(t *testing.T) {
	c := config.Default()
	c.Set("log_format", "console")
	c.Set("log_level", "debug")
	var buf bytes.Buffer
	log, _, _ := newLogger(c, &buf)
	log.Debug().Str("queue_id", "abc123").Msg("deferred")
	out := buf.String()
	if json.Valid([]byte(strings.TrimSpace(out))) {
		t.Fatalf("console output is JSON: %s", out)
	}
	for _, want := range []string{"DBG", "deferred", "queue_id=abc123"} {
		if !strings.Contains(out, want) {
			t.Errorf("console output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour codes written to a non-terminal: %q", out)
	}
	if _, err := time.Parse(time.RFC3339, strings.Fields(out)[0]); err != nil {
		t.Errorf("console line does not start with a timestamp: %q", out)
	}
}
