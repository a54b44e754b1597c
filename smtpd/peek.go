package smtpd

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// inputPending reports whether the client has sent bytes we have not read
// yet: in our buffer or in the kernel's (Postfix's peekfd), without
// blocking. It serves the RFC 2920 pipelining checks.
func (s *session) inputPending() bool {
	if s.r.Buffered() > 0 {
		return true
	}
	return kernelPending(s.raw)
}

func kernelPending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		pending = err == nil && n > 0
		return true
	})
	return pending
}
