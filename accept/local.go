package accept

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/internal/addr"
	"github.com/holdfast-mta/holdfast/internal/crlf"
	"github.com/holdfast-mta/holdfast/store"
)

// headLimit bounds the header section that local submission reads into
// memory to look for From:, Date: and Message-ID:; a longer header is
// passed on as it is.
const headLimit = 1 << 20

// LocalHeaders is what the headers of a local submission are made of.
type LocalHeaders struct {
	Sender string
	// Hostname is myhostname, MailName mail_name.
	Hostname, MailName string
	Date               time.Time
}

// WriteLocal writes a locally submitted message from body: our
// Received: line, the From:, Date: and Message-ID: headers it lacks
// (RFC 5322 sec 3.6, as Postfix's cleanup adds them to local mail), and
// the content with its line ends made CRLF (as for SMTP: nothing queued
// carries a bare CR or LF). At most limit+1 bytes are read: it returns
// the header section and the size read, and a size over limit means the
// message is too big (the caller aborts). An error is the queue's when
// writing failed (errors.Is store.ErrNoSpace), else the reading's.
func (d *Draft) WriteLocal(body io.Reader, limit int64, h LocalHeaders) ([]byte, int64, error) {
	in := bufio.NewReader(io.LimitReader(body, limit+1))
	head, err := readHead(in, headLimit)
	if err != nil {
		return nil, 0, err
	}
	norm := &crlf.Writer{W: d}
	norm.Write(localHeaders(d.ID, h, head))
	n, err := io.Copy(norm, in)
	if err == nil {
		err = norm.Close()
	}
	if err != nil {
		return nil, 0, err
	}
	return head, int64(len(head)) + n, nil
}

// LocalUTF8 is Postfix's smtputf8_autodetect_classes (default sendmail,
// verify): a local submission whose envelope or header section is not
// ASCII ("u@café.test") is marked SMTPUTF8, so that it goes to next hops
// that offer it and is returned by others instead of being sent as if it
// were ASCII.
func LocalUTF8(sender string, rcpts []string, head []byte) bool {
	return !addr.IsASCII(sender) || !addr.IsASCII(strings.Join(rcpts, "")) || !addr.IsASCII(string(head))
}

// readHead reads the header section with its empty line (or the whole
// content when it has none, or the first limit bytes and the rest of
// that line).
func readHead(in *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	for len(head) < limit {
		line, err := in.ReadSlice('\n')
		head = append(head, line...)
		if err == io.EOF {
			return head, nil
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
		if err == nil && (string(line) == "\r\n" || string(line) == "\n") {
			break
		}
	}
	return head, nil
}

// localHeaders prepends the Received: line and adds the From:, Date: and
// Message-ID: headers that the message lacks.
func localHeaders(id store.ID, h LocalHeaders, content []byte) []byte {
	var b bytes.Buffer
	b.WriteString(Received(Trace{By: h.Hostname, MailName: h.MailName, Protocol: "LOCAL", ID: id, Date: h.Date}))
	have := headerNames(content)
	if !have["date"] {
		fmt.Fprintf(&b, "Date: %s\r\n", h.Date.Format("Mon, 2 Jan 2006 15:04:05 -0700 (MST)"))
	}
	if !have["from"] {
		from := h.Sender
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(&b, "From: %s\r\n", from)
	}
	if !have["message-id"] {
		fmt.Fprintf(&b, "Message-Id: <%s.%s@%s>\r\n", h.Date.UTC().Format("20060102150405"), id, h.Hostname)
	}
	b.Write(content)
	return b.Bytes()
}

// headerNames returns the lower-cased names of the header fields before
// the first empty line.
func headerNames(content []byte) map[string]bool {
	names := map[string]bool{}
	for len(content) > 0 {
		line := content
		if i := bytes.IndexByte(content, '\n'); i >= 0 {
			line, content = content[:i], content[i+1:]
		} else {
			content = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if i := bytes.IndexByte(line, ':'); i > 0 {
			names[strings.ToLower(strings.TrimSpace(string(line[:i])))] = true
		}
	}
	return names
}
