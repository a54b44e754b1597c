package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/control"
)

// sendmailArgs is a parsed sendmail command line.
type sendmailArgs struct {
	cfg        string
	sender     string
	hasSender  bool
	extract    bool // -t
	ignoreDots bool // -i, -oi
	mode       string
	site, id   string
	rcpts      []string
}

// runSendmail is sendmail(1): local submission from standard input, or
// the queue commands -q, -qR<site>, -qI<id>, -bp.
func runSendmail(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a, code := parseSendmail(args, stderr)
	if code >= 0 {
		return code
	}
	fatal := func(format string, v ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return exTempFail
	}
	switch a.mode {
	case "flush", "site", "id", "list":
		if len(a.rcpts) > 0 {
			what := map[string]string{"flush": "flush queue mode", "site": "flush site",
				"id": "flush queue ID", "list": "display queue mode"}[a.mode]
			return fatal("%s requires no recipient", what)
		}
	}
	switch a.mode {
	case "list":
		return postqueueList(a.cfg, false, "postqueue", stdout, stderr)
	case "flush":
		return postqueueFlush(a.cfg, control.FlushRequest{All: true}, "postqueue", stderr)
	case "site":
		return postqueueFlush(a.cfg, control.FlushRequest{Site: a.site}, "postqueue", stderr)
	case "id":
		return postqueueFlush(a.cfg, control.FlushRequest{ID: a.id}, "postqueue", stderr)
	case "ignore":
		return 0
	case "deliver":
		return sendmailSubmit(a, stdin, stderr)
	}
	return fatal("-b%s is not supported", a.mode)
}

// parseSendmail reads sendmail's options. code is -1 to go on, else the
// exit status after a message.
func parseSendmail(args []string, stderr io.Writer) (*sendmailArgs, int) {
	a := &sendmailArgs{cfg: defaultConfigPath, mode: "deliver"}
	fatal := func(format string, v ...any) (*sendmailArgs, int) {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return nil, exTempFail
	}
	withArg := "BCcFNRVXbfhor"
	i := 0
	for ; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			i++
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			break
		}
		if strings.HasPrefix(arg, "-q") {
			if code := a.queueOption(arg[2:], stderr); code >= 0 {
				return nil, code
			}
			continue
		}
		opt := arg[1]
		if !strings.ContainsRune(withArg, rune(opt)) {
			switch opt {
			case 't':
				a.extract = true
			case 'i':
				a.ignoreDots = true
			case 'v', 'n', 'm', 'e', 'A', 'L':
			default:
				return fatal("-%c: unknown option", opt)
			}
			continue
		}
		val := arg[2:]
		val, ok := optValue(args, &i, val)
		if !ok {
			return fatal("option -%c requires an argument", opt)
		}
		a.set(opt, val)
	}
	a.rcpts = args[i:]
	return a, -1
}

// set applies an option that takes a value; values of options holdfast
// does not use (-F, -N, -R, -V, -X, -h, most -o) are accepted and ignored.
func (a *sendmailArgs) set(opt byte, val string) {
	switch opt {
	case 'C', 'c':
		a.cfg = val
	case 'f', 'r':
		a.sender, a.hasSender = strings.TrimSuffix(strings.TrimPrefix(val, "<"), ">"), true
	case 'o':
		if strings.HasPrefix(val, "i") {
			a.ignoreDots = true
		}
	case 'b':
		switch val {
		case "p":
			a.mode = "list"
		case "m":
		default:
			a.mode = val
		}
	}
}

// queueOption handles -q, -q<interval>, -qR<site>, -qI<id> (reference
// spec §4.1).
func (a *sendmailArgs) queueOption(v string, stderr io.Writer) int {
	fail := func(format string, x ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", x...)
		return exTempFail
	}
	switch {
	case v == "":
		a.mode = "flush"
	case v[0] >= '0' && v[0] <= '9':
		a.mode = "ignore"
	case v[0] == 'R':
		if len(v) == 1 {
			return fail("specify: -qRsitename")
		}
		a.mode, a.site = "site", v[1:]
	case v[0] == 'I':
		if len(v) == 1 {
			return fail("specify: -qIqueueid")
		}
		a.mode, a.id = "id", v[1:]
	default: // Postfix's sendmail refuses a -q form it lacks in these words
		return fail("-q%c is not implemented", v[0])
	}
	return -1
}

// sendmailSubmit reads the message, takes recipients from the headers
// with -t, and queues it through the daemon.
func sendmailSubmit(a *sendmailArgs, stdin io.Reader, stderr io.Writer) int {
	fatal := func(format string, v ...any) int {
		fmt.Fprintf(stderr, "sendmail: fatal: "+format+"\n", v...)
		return exTempFail
	}
	cl, c, _ := clientFor(a.cfg, "sendmail", stderr)
	if cl == nil {
		return exTempFail
	}
	limit, err := c.Size("message_size_limit")
	if err != nil || limit <= 0 {
		limit = 1 << 40
	}
	content, err := readMessage(stdin, a.ignoreDots, limit)
	if err != nil {
		return fatal("%v", err)
	}
	rcpts := a.rcpts
	if a.extract {
		var hdr []string
		content, hdr = extractRecipients(content)
		rcpts = append(rcpts, hdr...)
	}
	if len(rcpts) == 0 {
		return fatal("No recipient addresses found in message header")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cl.Submit(ctx, a.sender, a.hasSender, rcpts, bytes.NewReader(content)); err != nil {
		return fatal("%v", err)
	}
	return 0
}

// readMessage reads a message from standard input: a leading mbox "From "
// line is dropped, a line with a single "." ends the input unless
// ignoreDots, and line ends become CRLF.
func readMessage(r io.Reader, ignoreDots bool, limit int64) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out bytes.Buffer
	first := true
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			text := bytes.TrimRight(line, "\r\n")
			if first && bytes.HasPrefix(text, []byte("From ")) {
				first = false
				continue
			}
			first = false
			if !ignoreDots && string(text) == "." {
				break
			}
			out.Write(text)
			out.WriteString("\r\n")
			if int64(out.Len()) > limit {
				return nil, errors.New("message file too big")
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read message: %w", err)
		}
	}
	return out.Bytes(), nil
}

// extractRecipients implements -t: the addresses in To:, Cc: and Bcc:
// (RFC 5322 sec 3.6.3); Bcc: lines are removed from the content.
func extractRecipients(content []byte) ([]byte, []string) {
	end := bytes.Index(content, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(content)
	} else {
		end += 2
	}
	var kept bytes.Buffer
	var rcpts []string
	var field string // current header name (lower case) while in a field
	var value strings.Builder
	flushField := func() {
		switch field {
		case "to", "cc", "bcc":
			if list, err := mail.ParseAddressList(value.String()); err == nil {
				for _, ad := range list {
					rcpts = append(rcpts, ad.Address)
				}
			} else {
				for _, s := range strings.Split(value.String(), ",") {
					if s = strings.Trim(strings.TrimSpace(s), "<>"); s != "" {
						rcpts = append(rcpts, s)
					}
				}
			}
		}
		field = ""
		value.Reset()
	}
	inBcc := false
	for _, line := range strings.SplitAfter(string(content[:end]), "\r\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			value.WriteString(strings.TrimRight(line, "\r\n"))
		} else {
			flushField()
			if k := strings.IndexByte(line, ':'); k > 0 {
				field = strings.ToLower(strings.TrimSpace(line[:k]))
				value.WriteString(strings.TrimRight(line[k+1:], "\r\n"))
			}
			inBcc = field == "bcc"
		}
		if !inBcc {
			kept.WriteString(line)
		}
	}
	flushField()
	kept.Write(content[end:])
	return kept.Bytes(), rcpts
}
