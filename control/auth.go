package control

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/holdfast-mta/holdfast/config"
)

// Peer is the process at the other end of a control connection.
type Peer struct {
	UID, GID, PID int
	// Known is false when the credentials could not be read; such a peer
	// is treated as an unknown, unprivileged user.
	Known bool
}

type peerKey struct{}

// peerCred reads SO_PEERCRED from a Unix socket connection.
func peerCred(c net.Conn) Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{UID: -1, GID: -1}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{UID: -1, GID: -1}
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return Peer{UID: -1, GID: -1}
	}
	return Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid), Known: true}
}

func peerFrom(ctx context.Context) Peer {
	p, ok := ctx.Value(peerKey{}).(Peer)
	if !ok {
		return Peer{UID: -1, GID: -1}
	}
	return p
}

// userName is the login name of uid, "unknown" when it has no passwd
// entry (as Postfix's postqueue does).
func userName(uid int) string {
	if uid < 0 {
		return "unknown"
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "unknown"
	}
	return u.Username
}

// Class is the kind of access a request needs.
type Class int

// Access classes, from least to most privileged.
const (
	// Anyone: health.
	Anyone Class = iota
	// Mailq: listings and stats (authorized_mailq_users).
	Mailq
	// FlushOp: flush by site, all or ID (authorized_flush_users).
	FlushOp
	// Submit: local submission (authorized_submit_users).
	Submit
	// Admin: queue changes, message content, backup, configuration: root
	// and the daemon's own user only.
	Admin
)

// Policy decides which peer may do what.
type Policy struct {
	// DaemonUID is the daemon's own uid, which, like root, passes every
	// check (Postfix's mail_owner).
	DaemonUID int
	flush     userList
	mailq     userList
	submit    userList
}

// NewPolicy reads authorized_flush_users, authorized_mailq_users and
// authorized_submit_users from c. daemonUID is normally os.Getuid().
func NewPolicy(c *config.Config, daemonUID int) (*Policy, error) {
	p := &Policy{DaemonUID: daemonUID}
	for _, x := range []struct {
		param string
		dst   *userList
	}{{"authorized_flush_users", &p.flush}, {"authorized_mailq_users", &p.mailq},
		{"authorized_submit_users", &p.submit}} {
		l, err := parseUserList(c, x.param)
		if err != nil {
			return nil, err
		}
		*x.dst = l
	}
	return p, nil
}

// Check returns nil when uid may do an operation of class c, else an
// error whose text is what the CLI prints (Postfix's wording for flush
// and mailq, reference spec §4.2).
func (p *Policy) Check(c Class, uid int) error {
	if c == Anyone || uid == 0 || uid == p.DaemonUID {
		return nil
	}
	name := userName(uid)
	var l userList
	var what string
	switch c {
	case Mailq:
		l, what = p.mailq, "view the mail queue"
	case FlushOp:
		l, what = p.flush, "flush the mail queue"
	case Submit:
		l, what = p.submit, "submit mail"
	default:
		//lint:ignore ST1005 Postfix's text (postqueue: fatal: User ...), which scripts match
		return fmt.Errorf("User %s(%d) is not allowed to change the mail queue: root or the daemon's user only", name, uid)
	}
	ok, err := l.match(name)
	if err != nil {
		//lint:ignore ST1005 Postfix's text (postqueue: fatal: User ...), which scripts match
		return fmt.Errorf("User %s(%d) is not allowed to %s: %v", name, uid, what, err)
	}
	if !ok {
		//lint:ignore ST1005 Postfix's text (postqueue: fatal: User ...), which scripts match
		return fmt.Errorf("User %s(%d) is not allowed to %s", name, uid, what)
	}
	return nil
}

// userList is a Postfix string list of user names: names, "!name",
// "/file/name" (its lines are patterns) and "type:table" (matched when the
// name is a key; "static:..." matches everyone). First match wins.
type userList []userPattern

type userPattern struct {
	neg   bool
	name  string
	any   bool
	table config.Table
}

func parseUserList(c *config.Config, param string) (userList, error) {
	if _, ok := c.Raw(param); !ok {
		// A configuration without the parameter gets Postfix's default.
		return compileUserList(param, []string{"static:anyone"}, 0)
	}
	items, err := c.List(param)
	if err != nil {
		return nil, err // a bad list must not fall back to "anyone"
	}
	return compileUserList(param, items, 0)
}

func compileUserList(param string, items []string, depth int) (userList, error) {
	var l userList
	for _, it := range items {
		p := userPattern{}
		if strings.HasPrefix(it, "!") {
			p.neg, it = true, strings.TrimSpace(it[1:])
		}
		switch {
		case strings.HasPrefix(it, "/") && depth == 0:
			sub, err := readPatternFile(param, it)
			if err != nil {
				return nil, err
			}
			if p.neg {
				for i := range sub {
					sub[i].neg = !sub[i].neg
				}
			}
			l = append(l, sub...)
			continue
		case strings.HasPrefix(it, "static:"):
			p.any = true
		case strings.Contains(it, ":"):
			t, err := config.OpenTable(it)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", param, err)
			}
			p.table = t
		default:
			p.name = it
		}
		l = append(l, p)
	}
	return l, nil
}

func readPatternFile(param, path string) (userList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", param, err)
	}
	defer f.Close()
	var items []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		items = append(items, strings.FieldsFunc(line, func(r rune) bool {
			return r == ',' || r == ' ' || r == '\t'
		})...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", param, path, err)
	}
	return compileUserList(param, items, 1)
}

func (l userList) match(name string) (bool, error) {
	for _, p := range l {
		hit := p.any || (p.name != "" && p.name == name)
		if p.table != nil {
			_, found, err := p.table.Lookup(name)
			if err != nil {
				return false, err
			}
			hit = found
		}
		if hit {
			return !p.neg, nil
		}
	}
	return false, nil
}
