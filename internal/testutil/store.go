package testutil

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/holdfast-mta/holdfast/store"
)

// Store opens a store in a fresh temporary directory (file queue.db; see
// StorePath). When the test ends it runs Check, failing the test on an
// inconsistency, and closes the store. A store the test closed itself is
// left alone.
func Store(t testing.TB, o store.Options) *store.Store {
	t.Helper()
	return OpenStore(t, filepath.Join(t.TempDir(), "queue.db"), o)
}

// OpenStore opens (or reopens, after a simulated crash) the store at path
// with the same clean-up as Store. Options are used as given: set NoSync
// for speed where durability is not under test.
func OpenStore(t testing.TB, path string, o store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(path, o)
	if err != nil {
		t.Fatalf("testutil: open store %s: %v", path, err)
	}
	paths.Store(s, path)
	t.Cleanup(func() {
		defer paths.Delete(s)
		err := s.Check()
		if errors.Is(err, store.ErrClosed) {
			return
		}
		if err != nil {
			t.Errorf("testutil: store check: %v", err)
		}
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("testutil: store close: %v", err)
		}
	})
	return s
}

// StorePath returns the file of a store opened by Store or OpenStore.
func StorePath(s *store.Store) string {
	p, _ := paths.Load(s)
	path, _ := p.(string)
	return path
}

// paths remembers the file of each open test store.
var paths sync.Map
