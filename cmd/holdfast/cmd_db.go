package main

import (
	"context"
	"errors"
	"flag"
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
	register("db", "check, back up or compact the queue database", runDB)
}

const dbUsage = `usage: holdfast db check [-c FILE]      consistency of the file and the flush index
       holdfast db backup [-c FILE] OUT  consistent snapshot (through the daemon while it runs)
       holdfast db compact [-c FILE]     rewrite the file without free pages (daemon stopped)`

func runDB(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, dbUsage)
		return exUsage
	}
	verb := args[0]
	fs := flag.NewFlagSet("holdfast db "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", defaultConfigPath, "configuration `file`")
	pos, err := parseMixed(fs, args[1:])
	if err != nil {
		return exUsage
	}
	want := map[string]int{"check": 0, "backup": 1, "compact": 0}
	n, ok := want[verb]
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
	fmt.Fprintf(stderr, "holdfast: %v\n", err)
	if errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrDamaged) {
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

// dbCompact rewrites the file into a fresh one and swaps it in. It refuses
// while the daemon runs: bbolt has one writer process.
func dbCompact(cl *control.Client, c *config.Config, running bool, stdout, stderr io.Writer) int {
	if running {
		fmt.Fprintf(stderr, "holdfast: db compact: the daemon is running (control socket %s); stop it first\n", cl.Path)
		return exTempFail
	}
	src := dbPath(c)
	before, err := os.Stat(src)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return exNoInput
	}
	dst := src + ".compact"
	os.Remove(dst)
	if err := store.Compact(src, dst); err != nil {
		os.Remove(dst)
		return dbError(err, c, stderr)
	}
	// Keep the owner and mode: the daemon runs as its own user.
	if st, ok := before.Sys().(*syscall.Stat_t); ok {
		os.Chown(dst, int(st.Uid), int(st.Gid))
	}
	os.Chmod(dst, before.Mode().Perm())
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
