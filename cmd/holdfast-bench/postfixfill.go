package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Filling Postfix's queue without SMTP ("-postfix-fill clone").
//
// Over SMTP Postfix queues 500-1,000 messages a second on this kind of
// machine, so a million takes 20-30 minutes. The clone fill lets Postfix
// itself accept, queue and defer one real message per shape of recipient
// address (one per address length: the filler domains all have one
// length, each size's hot domains another), then, with Postfix stopped,
// writes the rest of the deferred queue as copies of those files, the
// way Postfix lays its queue out:
//
//   - the queue file: the template's bytes with the recipient address and
//     the queue ID replaced by ones of the same length, so every record
//     length and offset in it (the size record's data offset, the defer
//     log's recipient offset) stays right; owner, mode 0700 (complete)
//     and a modification time in the future (the next attempt, when the
//     queue manager's deferred scan skips it), as the queue manager leaves
//     a deferred file;
//   - its name: a short queue ID, five hex digits of microseconds and the
//     file's own inode number in hex, under deferred/ hashed by the first
//     character (hash_queue_names, hash_queue_depth 1), so that postsuper's
//     structure check, which runs at every postfix start, finds every name
//     matching its inode and renames nothing;
//   - the defer log (defer/X/ID: the recipient's "deferred transport"
//     status, what postqueue shows as the reason);
//   - the fast-flush log of the domain (flush/DOMAIN with non-alphanumerics
//     as "_", one queue ID a line), which ETRN reads.
//
// Postfix then starts as usual (postsuper checks every file), and the fill
// is checked with postqueue -j: the count, every message deferred, and
// Batch messages for each hot domain.

// pfTemplate is one real deferred message written by Postfix.
type pfTemplate struct {
	addr, id    string
	queue, log  []byte // the queue file and its defer log
	uid, gid    int
	inodeDigits int // hex digits of the inode part of id
}

// postfixCloneFill brings Postfix's deferred queue from have to size
// messages by cloning, and restarts it. It returns the deferred count.
func postfixCloneFill(ctx context.Context, c *Config, r *Results, p *postfix, size, have int) (int, error) {
	hot, plan := postfixPlan(c, size, have)
	start := time.Now()
	templates, sent, err := p.queueTemplates(ctx, plan, have)
	if err != nil {
		return 0, err
	}
	c.logf("postfix: %d template messages queued and deferred by Postfix over SMTP, Postfix stopped (%s)", len(sent), time.Since(start).Round(time.Millisecond))
	if err := p.writeCopies(c, plan, sent, templates); err != nil {
		return 0, err
	}
	el := time.Since(start)
	c.logf("postfix queue filled to %d (+%d in %s: %d through SMTP, the rest cloned, %.0f msg/s)", have+len(plan), len(plan), el.Round(time.Millisecond), len(sent), float64(len(plan))/el.Seconds())

	p.cloneMark = p.maillogSize()
	d, err := p.Start(ctx)
	if err != nil {
		return 0, err
	}
	r.add("startup/"+fmt.Sprint(size), fmt.Sprintf("start-up until the port answers, %s queued", count(size)), "ms", true, "postfix", float64(d.Microseconds())/1000)
	c.logf("postfix started with %d queued in %s (postsuper checks every queue file first)", have+len(plan), d.Round(time.Millisecond))
	n, err := p.checkQueue(ctx, have+len(plan), hot, c.Batch)
	if err != nil {
		return 0, err
	}
	c.logf("postqueue -j: %d messages, all deferred, %d for each hot domain", n, c.Batch)
	p.cloneProblems(c, r)
	disk, err := diskBytes(p.QueueDir())
	if err != nil {
		return 0, err
	}
	r.add("disk/"+fmt.Sprint(size), fmt.Sprintf("disk per queued message, %s queued", count(size)), "KiB", true, "postfix", float64(disk)/float64(n)/1024)
	r.note("Postfix queue at %s: %d of %d messages written by Postfix over SMTP, the rest cloned from them (-postfix-fill clone); checked with postsuper at start and postqueue -j", count(size), len(sent), len(plan))
	return n, nil
}

// queueTemplates sends, through the running Postfix, the first message of
// plan of each address length, waits until it has deferred them, reads
// them and stops Postfix. It returns the templates by address length and
// the plan indexes sent.
func (p *postfix) queueTemplates(ctx context.Context, plan []string, have int) (map[int]*pfTemplate, []int, error) {
	shapes := map[int]bool{}
	var sent []int
	for i, d := range plan {
		if !shapes[len(d)] {
			shapes[len(d)] = true
			sent = append(sent, i)
		}
	}
	if err := goLoad(ctx, p.Addr(), 1, len(sent), func(j int) string { return "u@" + plan[sent[j]] }, 100); err != nil {
		return nil, nil, fmt.Errorf("postfix templates: %w", err)
	}
	if _, err := p.settle(ctx, have+len(sent), 5*time.Minute); err != nil {
		return nil, nil, err
	}
	templates := map[int]*pfTemplate{}
	for _, i := range sent {
		t, err := p.template(plan[i])
		if err != nil {
			return nil, nil, err
		}
		templates[len(plan[i])] = t
	}
	return templates, sent, p.Stop()
}

// writeCopies writes, with Postfix stopped, a copy of its template for
// every plan entry not sent, their fast-flush log entries, the templates'
// next attempt, and syncs.
func (p *postfix) writeCopies(c *Config, plan []string, sent []int, templates map[int]*pfTemplate) error {
	if err := roomFor(p.QueueDir(), len(plan)); err != nil {
		return err
	}
	start := time.Now()
	due := start.Add(retryAfter)
	skip := map[int]bool{}
	for _, i := range sent {
		skip[i] = true
	}
	logs, err := p.clone(plan, skip, templates, due)
	if err != nil {
		return err
	}
	for _, t := range templates {
		// The real ones come due with the copies, not after Postfix's
		// backoff (4000 s, shorter than a 1M run).
		if err := os.Chtimes(filepath.Join(p.QueueDir(), "deferred", t.id[:1], t.id), due, due); err != nil {
			return err
		}
	}
	if err := p.appendFlushLogs(logs, templates); err != nil {
		return err
	}
	c.logf("postfix: %d copies written (%s, %.0f/s)", len(logs), time.Since(start).Round(time.Millisecond), float64(len(logs))/time.Since(start).Seconds())
	// Written back now, not during the measurements.
	syncStart := time.Now()
	unix.Sync()
	c.logf("postfix: sync (%s)", time.Since(syncStart).Round(time.Millisecond))
	return nil
}

// roomFor checks that the file system under dir has space and inodes for
// n more deferred messages: two files each (queue file and defer log),
// a block or two apiece.
func roomFor(dir string, n int) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return err
	}
	need := uint64(n) * 10 << 10
	if free := fs.Bavail * uint64(fs.Bsize); free < need {
		return fmt.Errorf("%s: %d MiB free, the clone fill of %d messages needs about %d MiB", dir, free>>20, n, need>>20)
	}
	if fs.Files > 0 && fs.Ffree < uint64(2*n) {
		return fmt.Errorf("%s: %d inodes free, the clone fill of %d messages needs %d", dir, fs.Ffree, n, 2*n)
	}
	return nil
}

// flushName is the fast-flush log file of a domain (flush_site_to_path).
func flushName(domain string) string {
	b := []byte(strings.ToLower(domain))
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// template reads the deferred message Postfix has just queued for
// u@domain: its queue ID is the last line of the domain's fast-flush log.
func (p *postfix) template(domain string) (*pfTemplate, error) {
	addr := "u@" + domain
	b, err := os.ReadFile(filepath.Join(p.QueueDir(), "flush", flushName(domain)))
	if err != nil {
		return nil, fmt.Errorf("template for %s: %w", domain, err)
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return nil, fmt.Errorf("template for %s: empty fast-flush log", domain)
	}
	id := lines[len(lines)-1]
	if len(id) < 6 || strings.Trim(id, "0123456789ABCDEF") != "" {
		return nil, fmt.Errorf("template for %s: queue ID %q is not a short queue ID (enable_long_queue_ids = no)", domain, id)
	}
	t := &pfTemplate{addr: addr, id: id, inodeDigits: len(id) - 5}
	qf := filepath.Join(p.QueueDir(), "deferred", id[:1], id)
	if t.queue, err = os.ReadFile(qf); err != nil {
		return nil, err
	}
	if t.log, err = os.ReadFile(filepath.Join(p.QueueDir(), "defer", id[:1], id)); err != nil {
		return nil, err
	}
	if !bytes.Contains(t.queue, []byte(addr)) || !bytes.Contains(t.log, []byte(addr)) {
		return nil, fmt.Errorf("template %s does not name %s", qf, addr)
	}
	var st unix.Stat_t
	if err := unix.Stat(qf, &st); err != nil {
		return nil, err
	}
	if st.Mode&0o777 != 0o700 {
		return nil, fmt.Errorf("template %s has mode %o, want 0700 (complete)", qf, st.Mode&0o777)
	}
	t.uid, t.gid = int(st.Uid), int(st.Gid)
	return t, nil
}

// queued is one cloned message: its domain and queue ID.
type queuedID struct{ domain, id string }

// clone writes a deferred message for every plan entry not in skip, over
// a few goroutines, and returns their queue IDs.
func (p *postfix) clone(plan []string, skip map[int]bool, templates map[int]*pfTemplate, due time.Time) ([]queuedID, error) {
	tmp := filepath.Join(p.dir, "clone-tmp") // same file system as the queue
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var anyT *pfTemplate
	for _, t := range templates {
		anyT = t
	}
	for _, q := range []string{"deferred", "defer"} {
		for _, h := range "0123456789ABCDEF" {
			d := filepath.Join(p.QueueDir(), q, string(h))
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
			if err := os.Chown(d, anyT.uid, anyT.gid); err != nil {
				return nil, err
			}
		}
	}
	out := make([]queuedID, len(plan))
	err := parallelN(4, len(plan), func(i int) error {
		if skip[i] {
			return nil
		}
		t := templates[len(plan[i])]
		id, err := p.cloneOne(tmp, t, "u@"+plan[i], rand.IntN(1000000), due)
		out[i] = queuedID{plan[i], id}
		return err
	})
	if err != nil {
		return nil, err
	}
	var ids []queuedID
	for i, q := range out {
		if !skip[i] {
			ids = append(ids, q)
		}
	}
	return ids, nil
}

// cloneOne writes one deferred message for addr from t and returns its
// queue ID.
func (p *postfix) cloneOne(tmp string, t *pfTemplate, addr string, usec int, due time.Time) (string, error) {
	f, err := createTemp(tmp, 0o700)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	ino := fmt.Sprintf("%X", st.Ino)
	if len(ino) > t.inodeDigits {
		os.Remove(f.Name())
		return "", fmt.Errorf("inode %s has more hex digits than the template's queue ID %s", ino, t.id)
	}
	// Zero-padded to the template's width: strtoul reads it back to the
	// same inode number (postsuper's check), and the 6th character of a
	// padded ID is 0 where Postfix's own IDs of that length have a
	// non-zero digit, so no ID Postfix makes can equal it.
	id := fmt.Sprintf("%05X%0*s", usec, t.inodeDigits, ino)
	qf := bytes.ReplaceAll(bytes.ReplaceAll(t.queue, []byte(t.addr), []byte(addr)), []byte(t.id), []byte(id))
	if _, err := f.Write(qf); err != nil {
		return "", err
	}
	if err := f.Chown(t.uid, t.gid); err != nil {
		return "", err
	}
	tv := unix.NsecToTimeval(due.UnixNano())
	if err := unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv}); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), filepath.Join(p.QueueDir(), "deferred", id[:1], id)); err != nil {
		return "", err
	}
	lf, err := os.OpenFile(filepath.Join(p.QueueDir(), "defer", id[:1], id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_, err = lf.Write(bytes.ReplaceAll(t.log, []byte(t.addr), []byte(addr)))
	if err == nil {
		err = lf.Chown(t.uid, t.gid)
	}
	if cerr := lf.Close(); err == nil {
		err = cerr
	}
	return id, err
}

var tempSeq atomic.Uint64

// createTemp creates a new file in dir with the given mode.
func createTemp(dir string, mode os.FileMode) (*os.File, error) {
	for {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("q%d", tempSeq.Add(1))), os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
	}
}

// appendFlushLogs appends the cloned queue IDs to their domains'
// fast-flush logs.
func (p *postfix) appendFlushLogs(ids []queuedID, templates map[int]*pfTemplate) error {
	var anyT *pfTemplate
	for _, t := range templates {
		anyT = t
	}
	byDomain := map[string]*strings.Builder{}
	var order []string
	for _, q := range ids {
		b := byDomain[q.domain]
		if b == nil {
			b = &strings.Builder{}
			byDomain[q.domain] = b
			order = append(order, q.domain)
		}
		b.WriteString(q.id)
		b.WriteByte('\n')
	}
	for _, d := range order {
		path := filepath.Join(p.QueueDir(), "flush", flushName(d))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		_, err = io.WriteString(f, byDomain[d].String())
		if err == nil {
			err = f.Chown(anyT.uid, anyT.gid)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkQueue runs postqueue -j and checks that it lists want messages,
// all deferred, and for each hot domain exactly the batch of queue IDs
// its fast-flush log names (so postsuper renamed none of them at start).
func (p *postfix) checkQueue(ctx context.Context, want int, hot []string, batch int) (int, error) {
	cmd := exec.CommandContext(ctx, "postqueue", "-c", p.etc, "-j")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	listed := map[string][]string{} // hot recipient -> queue IDs
	for _, h := range hot {
		listed["u@"+h] = nil
	}
	n, notDeferred := 0, 0
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Queue      string `json:"queue_name"`
			ID         string `json:"queue_id"`
			Recipients []struct {
				Address string `json:"address"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, fmt.Errorf("postqueue -j: %w: %.200s", err, sc.Text())
		}
		n++
		if m.Queue != "deferred" {
			notDeferred++
		}
		for _, rc := range m.Recipients {
			if ids, ok := listed[rc.Address]; ok {
				listed[rc.Address] = append(ids, m.ID)
			}
		}
	}
	if err := errors.Join(sc.Err(), cmd.Wait()); err != nil {
		return 0, fmt.Errorf("postqueue -j: %w: %s", err, stderr.String())
	}
	if n != want || notDeferred > 0 {
		return n, fmt.Errorf("postqueue -j lists %d messages (%d not deferred), want %d deferred", n, notDeferred, want)
	}
	for _, h := range hot {
		if err := p.sameAsFlushLog(h, listed["u@"+h], batch); err != nil {
			return n, err
		}
	}
	return n, nil
}

// sameAsFlushLog checks that the queue IDs postqueue listed for domain
// are the batch its fast-flush log names.
func (p *postfix) sameAsFlushLog(domain string, ids []string, batch int) error {
	b, err := os.ReadFile(filepath.Join(p.QueueDir(), "flush", flushName(domain)))
	if err != nil {
		return err
	}
	logged := strings.Fields(string(b))
	sort.Strings(ids)
	sort.Strings(logged)
	if len(ids) != batch || !slices.Equal(ids, logged) {
		return fmt.Errorf("%s: postqueue -j lists %d messages %v, its fast-flush log %d %v, want the same %d", domain, len(ids), ids, len(logged), logged, batch)
	}
	return nil
}

func (p *postfix) maillogSize() int64 {
	st, err := os.Stat(filepath.Join(p.dir, "maillog"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// maillogWarnings returns Postfix's log lines since offset from that
// report a problem (warning, error, fatal, panic).
func (p *postfix) maillogWarnings(offset int64) []string {
	f, err := os.Open(filepath.Join(p.dir, "maillog"))
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return []string{err.Error()}
	}
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		for _, w := range []string{"warning:", "error:", "fatal:", "panic:"} {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// cloneProblems reports in the results every warning or error Postfix
// logged since it was started on the cloned queue (postsuper renaming a
// file, the queue manager or a delivery agent refusing one, a wrong
// owner), and moves the mark past them.
func (p *postfix) cloneProblems(c *Config, r *Results) {
	w := p.maillogWarnings(p.cloneMark)
	p.cloneMark = p.maillogSize()
	if len(w) == 0 {
		return
	}
	for _, l := range w {
		c.logf("postfix logged: %s", l)
	}
	r.note("Postfix logged %d warning or error lines on the cloned queue, the first: %s", len(w), w[0])
}

// qmgrPid finds the running instance's queue manager: the child of its
// master named qmgr.
func (p *postfix) qmgrPid() (int, error) {
	master := readPid(filepath.Join(p.QueueDir(), "pid", "master.pid"))
	if master <= 0 {
		return 0, errors.New("postfix master not running")
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		f := strings.Fields(s[r+1:])
		var ppid int
		if len(f) > 1 {
			fmt.Sscan(f[1], &ppid)
		}
		if ppid == master && s[l+1:r] == "qmgr" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no qmgr under postfix master %d", master)
}

// parallelN runs f(0..n-1) over w goroutines and returns the first error.
func parallelN(w, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for g := 0; g < w; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < n; i += w {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}(g)
	}
	wg.Wait()
	return first
}
