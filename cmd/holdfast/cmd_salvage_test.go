package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast-mta/holdfast/store"
)

// TestSalvageUnreadableJournal: a queue.db.journal that cannot be read (a
// size no journal has: truncated) stops the store from opening;
// `db salvage -replace` says the journal could not be read and moves it
// aside with the damaged file, so that holdfast starts on the salvaged
// file instead of stopping on the same journal again.
func TestSalvageUnreadableJournal(t *testing.T) {
	dir := t.TempDir()
	cf := filepath.Join(dir, "holdfast.cf")
	os.WriteFile(cf, []byte("queue_directory = "+dir+"\ncontrol_socket = "+filepath.Join(dir, "control.sock")+
		"\nrelay_domains = customer.test\nfast_flush_domains = $relay_domains\n"), 0o644)
	db := filepath.Join(dir, "queue.db")
	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := &store.Message{Sender: "a@sender.test", Recipients: []store.Recipient{{Addr: "x@customer.test"}}}
	if err := s.Enqueue(m, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Truncate(db+".journal", 5000); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(db, store.Options{}); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("Open next to a truncated journal: %v; want ErrDamaged", err)
	}
	var out, errOut bytes.Buffer
	if code := runDB([]string{"salvage", "-c", cf, "-replace"}, &out, &errOut); code != 0 {
		t.Fatalf("db salvage -replace: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "journal could not be read") {
		t.Errorf("db salvage does not report the journal:\n%s", out.String())
	}
	if _, err := os.Stat(db + ".journal.damaged"); err != nil {
		t.Errorf("the unreadable journal is not kept aside: %v\n%s", err, out.String())
	}
	s, err = store.Open(db, store.Options{})
	if err != nil {
		t.Fatalf("Open after db salvage -replace: %v\n%s", err, out.String())
	}
	defer s.Close()
	if _, err := s.Get(m.ID); err != nil {
		t.Fatalf("the message after salvage: %v", err)
	}
}
