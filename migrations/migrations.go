// Package migrations holds the numbered, frozen schema steps of the queue
// database. Each step is a function over a raw bbolt transaction that uses
// only its own constants (never the live store code), so that a step
// written for schema N still does the same thing when the store has moved
// on to schema N+5. Steps run in order, each in its own transaction that
// also records the new version under meta/schema; a step must be
// idempotent, so that re-running it after a crash between its work and
// the commit is harmless (bbolt makes that window empty, but the rule
// keeps steps simple to reason about).
package migrations

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Bucket and key that hold the schema version. These two names are frozen:
// every release reads them to decide what to run.
var (
	metaBucket = []byte("meta")
	schemaKey  = []byte("schema")
)

// ErrTooNew is returned when the database was written by a newer binary.
var ErrTooNew = errors.New("schema newer than this binary")

// Step is one numbered schema change.
type Step struct {
	// Version is the schema version the database has after the step.
	Version int
	// Name says what the step does ("initial", "add dest bucket").
	Name string
	// Apply does the change inside the transaction it is given.
	Apply func(tx *bolt.Tx) error
}

// Registry is an ordered set of steps. Default holds the released steps;
// tests build their own to exercise the framework.
type Registry struct {
	steps map[int]Step
}

// Default is the registry of released steps, filled by the NNNN_*.go files.
var Default = &Registry{}

// Register adds a step. It panics on a duplicate version: two steps with
// one number is a programming error that must not reach a database.
func (r *Registry) Register(s Step) {
	if r.steps == nil {
		r.steps = make(map[int]Step)
	}
	if s.Version < 1 {
		panic(fmt.Sprintf("migrations: step %q: version %d < 1", s.Name, s.Version))
	}
	if _, dup := r.steps[s.Version]; dup {
		panic(fmt.Sprintf("migrations: duplicate step %d", s.Version))
	}
	r.steps[s.Version] = s
}

// Clone returns a copy of r that can be extended without touching r.
func (r *Registry) Clone() *Registry {
	c := &Registry{steps: make(map[int]Step, len(r.steps))}
	for v, s := range r.steps {
		c.steps[v] = s
	}
	return c
}

// Steps returns the steps in version order.
func (r *Registry) Steps() []Step {
	out := make([]Step, 0, len(r.steps))
	for _, s := range r.steps {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// Latest returns the highest version, 0 when the registry is empty.
func (r *Registry) Latest() int {
	latest := 0
	for v := range r.steps {
		latest = max(latest, v)
	}
	return latest
}

// Version reads the schema version recorded in tx; 0 for a new file.
func Version(tx *bolt.Tx) (int, error) {
	b := tx.Bucket(metaBucket)
	if b == nil {
		return 0, nil
	}
	v := b.Get(schemaKey)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("migrations: meta/schema has %d bytes, want 8", len(v))
	}
	return int(binary.BigEndian.Uint64(v)), nil
}

func setVersion(tx *bolt.Tx, v int) error {
	b, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(v))
	return b.Put(schemaKey, buf[:])
}

// Apply runs every step newer than the database's version, each in its
// own Update. It returns the versions before and after. A database newer
// than the registry's latest step gives ErrTooNew and is left untouched.
func (r *Registry) Apply(db *bolt.DB) (from, to int, err error) {
	if err := db.View(func(tx *bolt.Tx) error {
		from, err = Version(tx)
		return err
	}); err != nil {
		return 0, 0, err
	}
	if latest := r.Latest(); from > latest {
		return from, from, fmt.Errorf("migrations: database schema %d, binary knows %d: %w", from, latest, ErrTooNew)
	}
	to = from
	for _, s := range r.Steps() {
		if s.Version <= to {
			continue
		}
		err := db.Update(func(tx *bolt.Tx) error {
			if err := s.Apply(tx); err != nil {
				return err
			}
			return setVersion(tx, s.Version)
		})
		if err != nil {
			return from, to, fmt.Errorf("migrations: step %04d %s: %w", s.Version, s.Name, err)
		}
		to = s.Version
	}
	return from, to, nil
}
