package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/control"
	"github.com/holdfast-mta/holdfast/flush"
	"github.com/holdfast-mta/holdfast/store"
)

func init() {
	register("db", "check, back up, compact or salvage the queue database", runDB)
}

const dbUsage = `usage: holdfast db check [-c FILE]      consistency of the file and the flush index
       holdfast db backup [-c FILE] OUT  consistent snapshot (through the daemon while it runs)
       holdfast db compact [-c FILE]     rewrite the file without free pages (daemon stopped)
       holdfast db salvage [-c FILE] [-replace] [OUT]
                                         copy every readable message of a damaged file into
                                         OUT (default queue.db.salvaged); -replace puts it in
                                         place of queue.db, kept as queue.db.damaged (daemon stopped)`

func runDB(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, dbUsage)
		return exUsage
	}
	verb := args[0]
	fs, cfg := commandFlags("holdfast db "+verb, stderr)
	replace := false
	if verb == "salvage" {
		fs.BoolVar(&replace, "replace", false, "put the salvaged file in place of queue.db")
	}
	pos, err := parseMixed(fs, args[1:])
	if err != nil {
		return exUsage
	}
	want := map[string]int{"check": 0, "backup": 1, "compact": 0, "salvage": 1}
	n, ok := want[verb]
	if verb == "salvage" && len(pos) == 0 {
		n = 0
	}
	if !ok || len(pos) != n {
		fmt.Fprintln(stderr, dbUsage)
		return exUsage
	}
	cl, c, code := clientFor(*cfg, "holdfast", stderr)
	if cl == nil {
		return code
	}
	running := daemonRunning(cl)
	switch verb {
	case "check":
		return dbCheck(cl, c, running, stdout, stderr)
	case "backup":
		return dbBackup(cl, c, running, pos[0], stdout, stderr)
	case "salvage":
		return dbSalvage(cl, c, running, pos, replace, stdout, stderr)
	}
	return dbCompact(cl, c, running, stdout, stderr)
}

// daemonRunning reports whether the daemon answers on its socket.
func daemonRunning(cl *control.Client) bool {
	_, err := cl.Health(context.Background())
	var de *control.DownError
	return !errors.As(err, &de)
}

func dbPath(c *config.Config) string {
	return filepath.Join(c.String("queue_directory"), queueDBName)
}

// openOffline opens the queue file with the daemon's flush policy, so that
// opening it does not rebuild the index it is meant to check.
func openOffline(c *config.Config) (*store.Store, error) {
	p, err := flush.New(c)
	if err != nil {
		return nil, err
	}
	return store.Open(dbPath(c), store.Options{Timeout: lockTimeout, Eligible: p.Eligible, PolicyKey: p.Key()})
}

func dbError(err error, c *config.Config, stderr io.Writer) int {
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "holdfast: %s is in use by another process and its control socket does not answer\n", dbPath(c))
		return exTempFail
	}
	if errors.Is(err, store.ErrDamaged) {
		fmt.Fprintf(stderr, "holdfast: %v; `holdfast db salvage` copies what can still be read into a new file\n", err)
		return exDataErr
	}
	fmt.Fprintf(stderr, "holdfast: %v\n", err)
	if errors.Is(err, store.ErrCorrupt) {
		return exDataErr
	}
	return exIOErr
}

func dbCheck(cl *control.Client, c *config.Config, running bool, stdout, stderr io.Writer) int {
	if running {
		if err := cl.Check(context.Background()); err != nil {
			var ae *control.Error
			if errors.As(err, &ae) && ae.Code == "check_failed" {
				fmt.Fprintf(stderr, "holdfast: %s: %v\n", dbPath(c), err)
				return exDataErr
			}
			return apiExit("holdfast", err, stderr)
		}
		fmt.Fprintf(stdout, "%s: ok\n", dbPath(c))
		return 0
	}
	s, err := openOffline(c)
	if err != nil {
		return dbError(err, c, stderr)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		fmt.Fprintf(stderr, "holdfast: %s: %v\n", dbPath(c), err)
		return exDataErr
	}
	fmt.Fprintf(stdout, "%s: ok\n", dbPath(c))
	return 0
}

// dbBackup writes the snapshot to OUT.tmp, syncs it and renames it, so
// OUT is either the old file or a complete snapshot.
func dbBackup(cl *control.Client, c *config.Config, running bool, out string, stdout, stderr io.Writer) int {
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exIOErr
	}
	defer os.Remove(tmp)
	var n int64
	if running {
		n, err = cl.Backup(context.Background(), f)
	} else {
		var s *store.Store
		if s, err = openOffline(c); err == nil {
			n, err = s.Backup(f)
			s.Close()
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		var ae *control.Error
		var de *control.DownError
		if errors.As(err, &ae) || errors.As(err, &de) {
			return apiExit("holdfast", err, stderr)
		}
		return dbError(err, c, stderr)
	}
	fmt.Fprintf(stdout, "%s: %d bytes written\n", out, n)
	return 0
}

// offlineFile returns the queue file and its state for an operation
// that needs the daemon stopped (bbolt has one writer process), or the
// exit status when it runs or the file is missing.
func offlineFile(cl *control.Client, c *config.Config, running bool, op string, stderr io.Writer) (string, os.FileInfo, int) {
	if running {
		fmt.Fprintf(stderr, "holdfast: db %s: the daemon is running (control socket %s); stop it first\n", op, cl.Path)
		return "", nil, exTempFail
	}
	src := dbPath(c)
	before, err := os.Stat(src)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return "", nil, exNoInput
	}
	return src, before, 0
}

// dbCompact rewrites the file into a fresh one and swaps it in. It refuses
// while the daemon runs: bbolt has one writer process.
func dbCompact(cl *control.Client, c *config.Config, running bool, stdout, stderr io.Writer) int {
	src, before, code := offlineFile(cl, c, running, "compact", stderr)
	if code != 0 {
		return code
	}
	dst := src + ".compact"
	os.Remove(dst)
	if err := store.Compact(src, dst); err != nil {
		os.Remove(dst)
		return dbError(err, c, stderr)
	}
	keepOwner(dst, before)
	if err := os.Rename(dst, src); err != nil {
		os.Remove(dst)
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exIOErr
	}
	after, err := os.Stat(src)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exIOErr
	}
	fmt.Fprintf(stdout, "%s: %d -> %d bytes\n", src, before.Size(), after.Size())
	return 0
}

// keepOwner gives the file at path the owner and mode of the queue file
// it replaces (before): the daemon runs as its own user.
func keepOwner(path string, before os.FileInfo) {
	if st, ok := before.Sys().(*syscall.Stat_t); ok {
		os.Chown(path, int(st.Uid), int(st.Gid))
	}
	os.Chmod(path, before.Mode().Perm())
}

// dbSalvage copies every readable message of queue.db into a new file
// (store.Salvage) and reports what was lost. With replace, the damaged
// file is renamed queue.db.damaged and the new one takes its place, so
// that `holdfast serve` starts on it; without, the operator moves it.
func dbSalvage(cl *control.Client, c *config.Config, running bool, pos []string, replace bool, stdout, stderr io.Writer) int {
	src, before, code := offlineFile(cl, c, running, "salvage", stderr)
	if code != 0 {
		return code
	}
	out := src + ".salvaged"
	if len(pos) > 0 {
		out = pos[0]
	}
	aside := src + ".damaged"
	// A journal salvage cannot read would stop the salvaged file from
	// opening too: it goes aside with the damaged file.
	journal, journalAside := src+".journal", src+".journal.damaged"
	if replace {
		for _, p := range []string{aside, journalAside} {
			if _, err := os.Stat(p); err == nil {
				fmt.Fprintf(stderr, "holdfast: db salvage: %s exists (an earlier salvage?); move it away first\n", p)
				return exCantCreat
			}
		}
	}
	p, err := flush.New(c)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exConfig
	}
	rep, err := store.Salvage(src, out, store.Options{Timeout: lockTimeout, Eligible: p.Eligible, PolicyKey: p.Key()})
	if err != nil {
		os.Remove(out)
		return dbError(err, c, stderr)
	}
	keepOwner(out, before)
	printSalvage(stdout, src, out, rep)
	if !replace {
		if rep.JournalErr != nil {
			fmt.Fprintf(stdout, "to use it: mv %s %s && mv %s %s && mv %s %s, then start holdfast\n", src, aside, journal, journalAside, out, src)
			return 0
		}
		fmt.Fprintf(stdout, "to use it: mv %s %s && mv %s %s, then start holdfast\n", src, aside, out, src)
		return 0
	}
	if rep.JournalErr != nil {
		if err := os.Rename(journal, journalAside); err != nil {
			fmt.Fprintf(stderr, "holdfast: %v\n", err)
			return exIOErr
		}
		fmt.Fprintf(stdout, "%s moved aside to %s\n", journal, journalAside)
	}
	if err := os.Rename(src, aside); err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exIOErr
	}
	if err := os.Rename(out, src); err != nil {
		fmt.Fprintf(stderr, "holdfast: %v (the damaged file is %s)\n", err, aside)
		return exIOErr
	}
	fmt.Fprintf(stdout, "%s replaced by the salvaged file; the damaged file is kept as %s\n", src, aside)
	return 0
}

func printSalvage(w io.Writer, src, out string, rep store.SalvageReport) {
	fmt.Fprintf(w, "%s: %d pages read, %d damaged\n", src, rep.Pages, len(rep.Damaged))
	for _, p := range rep.Damaged {
		fmt.Fprintf(w, "  %s\n", p)
	}
	fmt.Fprintf(w, "%s: %d messages recovered (%d on hold)\n", out, rep.Recovered, rep.Held)
	if rep.Journaled > 0 {
		fmt.Fprintf(w, "  of them %d from %s.journal (acknowledged, not yet in the file)\n", rep.Journaled, src)
	}
	if rep.JournalMissing > 0 {
		fmt.Fprintf(w, "%s.journal is damaged: %d acknowledged messages in it could not be read (lost)\n", src, rep.JournalMissing)
	}
	if rep.JournalErr != nil {
		fmt.Fprintf(w, "%s.journal could not be read (%v): messages it holds are not in %s\n", src, rep.JournalErr, out)
	}
	fmt.Fprintf(w, "lost: %d messages named by the damaged file", len(rep.Lost))
	if rep.LostUnnamed > 0 {
		fmt.Fprintf(w, ", and %d contents without a readable record", rep.LostUnnamed)
	}
	fmt.Fprintln(w)
	for _, id := range rep.Lost {
		fmt.Fprintf(w, "  %s\n", id)
	}
	if rep.Quarantined > 0 {
		fmt.Fprintf(w, "not copied: %d records already in the corrupt bucket (holdfast queue lists them in the old file)\n", rep.Quarantined)
	}
}
