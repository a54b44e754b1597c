package delivery

import (
	"bufio"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

// FuzzReplyReader feeds arbitrary server output, in arbitrary splits,
// through the reply bound and textproto's reply parser (what go-smtp
// uses): no panic, and every reply that comes out respects MaxReplyLine
// and MaxReplyLines; a limit error is sticky.
func FuzzReplyReader(f *testing.F) {
	f.Add([]byte("220 mx.test ESMTP\r\n"), uint8(3))
	f.Add([]byte("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"), uint8(1))
	f.Add([]byte("220 "+strings.Repeat("a", 3000)), uint8(200))
	f.Add([]byte(strings.Repeat("250-x\r\n", 120)), uint8(9))
	f.Add([]byte("550-5.1.1 no\n550 5.1.1 such user\n421 bye\r\n"), uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		b := &replyBound{r: &chunked{b: in, n: int(split%64) + 1}}
		tp := textproto.NewReader(bufio.NewReader(b))
		for {
			_, msg, err := tp.ReadResponse(0)
			if errors.Is(err, errReplyLimit) {
				if _, err := b.Read(make([]byte, 8)); !errors.Is(err, errReplyLimit) {
					t.Fatalf("limit error not sticky: %v", err)
				}
				return
			}
			var te *textproto.Error
			if err != nil && !errors.As(err, &te) {
				return // EOF, or a malformed reply: the session ends
			}
			lines := strings.Split(msg, "\n")
			if len(lines) > MaxReplyLines {
				t.Fatalf("reply of %d lines passed", len(lines))
			}
			for _, l := range lines {
				if len(l) > MaxReplyLine {
					t.Fatalf("line of %d bytes passed", len(l))
				}
			}
			if err == io.EOF {
				return
			}
		}
	})
}
