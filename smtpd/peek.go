package smtpd

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inputPending reports whether the client has sent bytes we have not read
// yet: in our buffer or in the kernel's (Postfix's peekfd), without
// blocking. It serves the RFC 2920 pipelining checks.
func (s *session) inputPending() bool {
	if s.r.Buffered() > 0 {
		return true
	}
	return s.kernelPending()
}

// kernelPending reports whether the kernel holds bytes from the client
// that we have not read (the TCP connection, under TLS too).
func (s *session) kernelPending() bool { return s.buf.peek.pending(s.raw) }

// peeker looks at a connection's receive queue with MSG_PEEK, as
// Postfix's peekfd does with FIONREAD: once per command of a session
// that checks for pipelining. It lives in the session's pooled buffers,
// its callback made once, so that a look allocates nothing (it took the
// connection's RawConn, a closure and recvfrom's address each time).
type peeker struct {
	rc     syscall.RawConn // of the session's connection; nil between sessions
	found  bool
	buf    [1]byte
	lookFn func(fd uintptr) bool
}

// pending reports whether c's receive queue holds a byte.
func (p *peeker) pending(c net.Conn) bool {
	if p.rc == nil {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		p.rc = rc
	}
	if p.lookFn == nil {
		p.lookFn = p.look
	}
	p.found = false
	p.rc.Read(p.lookFn)
	return p.found
}

// look is the recvfrom(MSG_PEEK|MSG_DONTWAIT) of one byte. It never
// blocks, so it goes straight to the kernel without telling the
// scheduler (RawSyscall), and asks for no source address.
func (p *peeker) look(fd uintptr) bool {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.buf[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	p.found = errno == 0 && n > 0
	return true
}
