package delivery

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
)

// parsedDSN is a notice taken apart with mime/multipart.
type parsedDSN struct {
	header   mail.Header
	subject  string
	text     string               // part 1
	msg      textproto.MIMEHeader // per-message fields of part 2
	rcpts    []textproto.MIMEHeader
	origType string // part 3 content type
	original string
}

func parseDSN(t *testing.T, data []byte) parsedDSN {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("dsn: %v\n%s", err, data)
	}
	var d parsedDSN
	d.header = msg.Header
	d.subject = msg.Header.Get("Subject")
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("dsn has %d parts", i)
			}
			return d
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		b, _ := io.ReadAll(p)
		ct := p.Header.Get("Content-Type")
		switch i {
		case 0:
			if !strings.HasPrefix(ct, "text/plain") || p.Header.Get("Content-Description") != "Notification" {
				t.Errorf("part 1: %v", p.Header)
			}
			d.text = string(b)
		case 1:
			if ct != "message/delivery-status" && ct != "message/global-delivery-status" {
				t.Errorf("part 2 type %q", ct)
			}
			r := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
			for j := 0; ; j++ {
				h, err := r.ReadMIMEHeader()
				if len(h) > 0 {
					if j == 0 {
						d.msg = h
					} else {
						d.rcpts = append(d.rcpts, h)
					}
				}
				if err != nil {
					break
				}
			}
		case 2:
			d.origType, d.original = ct, string(b)
		}
	}
}

func checkField(t *testing.T, h textproto.MIMEHeader, name, want string) {
	t.Helper()
	if got := h.Get(name); got != want {
		t.Errorf("%s: %q, want %q", name, got, want)
	}
}
