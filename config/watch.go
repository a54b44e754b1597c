package config

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TableEvents, when set (by the daemon, before it opens tables), is told
// of every re-read of a text lookup table: err is nil when the new
// contents are in force, else the reason the old ones stay.
var TableEvents atomic.Pointer[func(file string, err error)]

// Timing of the re-read: the file is looked at no more than once per
// checkEvery, and a change is taken once the file has been left alone for
// settle, so that a table being written in place is not read half way.
const (
	checkEvery = time.Second
	settle     = time.Second
)

// fileTable is a text table that follows its file: when the file changes
// (a new version renamed into place, or edited in place), the next lookup
// after the change has settled reads it again, as Postfix daemons pick up
// a rebuilt table by themselves. A file that no longer parses, or is gone,
// leaves the table as it was, and the event says why.
type fileTable struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	cur     mapTable
	stat    os.FileInfo // of the version in cur
	checked time.Time
}

func openFileTable(path string) (*fileTable, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := parseTableText(path, data)
	if err != nil {
		return nil, err
	}
	return &fileTable{path: path, now: time.Now, cur: t.(mapTable), stat: st}, nil
}

func (f *fileTable) Lookup(key string) (string, bool, error) {
	return f.current().Lookup(key)
}

// Keys lists the keys of the current version.
func (f *fileTable) Keys() []string { return f.current().Keys() }

// current returns the table in force, re-reading the file first when it
// has changed and settled.
func (f *fileTable) current() mapTable {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < checkEvery {
		return f.cur
	}
	f.checked = now
	st, err := os.Stat(f.path)
	if err != nil {
		if !os.IsNotExist(err) || f.stat != nil {
			f.report(err)
			f.stat = nil // report a missing file once
		}
		return f.cur
	}
	if f.stat != nil && os.SameFile(st, f.stat) && st.ModTime().Equal(f.stat.ModTime()) && st.Size() == f.stat.Size() {
		return f.cur
	}
	if now.Sub(st.ModTime()) < settle {
		f.checked = time.Time{} // look again at the next lookup
		return f.cur
	}
	data, err := os.ReadFile(f.path)
	if err == nil {
		var t Table
		if t, err = parseTableText(f.path, data); err == nil {
			f.cur, f.stat = t.(mapTable), st
		}
	}
	if err != nil {
		f.stat = st // do not re-read the same bad version
	}
	f.report(err)
	return f.cur
}

func (f *fileTable) report(err error) {
	if fn := TableEvents.Load(); fn != nil {
		(*fn)(f.path, err)
	}
}
