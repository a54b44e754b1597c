package store

import "errors"

var (
	// ErrNotFound: no message with that ID is queued.
	ErrNotFound = errors.New("store: no such message")

	// ErrLocked: another process holds the queue file open; the error
	// text names its pid when the pid file next to the queue says.
	ErrLocked = errors.New("store: queue is in use by another process")

	// ErrSchemaTooNew: the file was written by a newer holdfast; this
	// binary refuses to touch it rather than misread it.
	ErrSchemaTooNew = errors.New("store: queue schema is newer than this binary")

	// ErrNoSpace: the disk is full (ENOSPC), the file could not grow or
	// be re-mapped, or Options.MaxSize would be exceeded. Nothing of the
	// failed transaction was written and the store stays usable; smtpd
	// answers 452 4.3.1.
	ErrNoSpace = errors.New("store: insufficient storage")

	// ErrCorrupt: a record could not be decoded. Write transactions move
	// such records to the corrupt bucket; reads report this error.
	ErrCorrupt = errors.New("store: corrupt record")

	// ErrDamaged: the queue file itself cannot be read (not a bbolt file,
	// truncated, a bad checksum or a page that fails bbolt's checks). A
	// damaged page is reported as a *DamageError (page, bucket), never as
	// a panic. `holdfast db check` tells more, `holdfast db salvage`
	// copies what can be read into a new file; serve refuses to start
	// when Open meets it.
	ErrDamaged = errors.New("store: queue file is damaged")

	// ErrNotActive: Finish or Unlease on a message that is not leased.
	ErrNotActive = errors.New("store: message is not active")

	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")

	// ErrBusy: the content budget (Options.ContentLimit) stayed used up
	// for the whole wait; smtpd answers 452 4.3.1, like ErrNoSpace.
	ErrBusy = errors.New("store: in-flight content limit reached")

	// ErrBadID: a string that is not a queue ID.
	ErrBadID = errors.New("store: malformed queue id")
)

// passedOver reports a message that a walk over many of them (the
// administrative operations, the flushes, LeaseDest) passes over: gone,
// corrupt, or on a damaged page (loadGuarded noted it for OnDamaged).
func passedOver(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDamaged)
}
