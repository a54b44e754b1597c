package maillog

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		json string
		want []string
	}{
		{`{"level":"info","component":"smtpd","conn_id":"s1","remote":"192.0.2.1","queue_id":"d25b3422tl52","event":"accepted","from":"a@example.org","size":421,"nrcpt":2,"client":"mail.example.org[192.0.2.1]","message":"message accepted"}`,
			[]string{"smtpd: d25b3422tl52: client=mail.example.org[192.0.2.1]",
				"qmgr: d25b3422tl52: from=<a@example.org>, size=421, nrcpt=2 (queue active)"}},
		{`{"level":"info","component":"control","queue_id":"d25b3422tl53","event":"accepted","from":"root@example.org","size":310,"nrcpt":1,"uid":0,"message":"local submission accepted"}`,
			[]string{"pickup: d25b3422tl53: uid=0 from=<root@example.org>",
				"qmgr: d25b3422tl53: from=<root@example.org>, size=310, nrcpt=1 (queue active)"}},
		{`{"level":"info","component":"smtpd","event":"reject","command":"RCPT","reply":"554 5.7.1 <u@other.test>: Relay access denied","client":"unknown[192.0.2.9]","from":"s@x.test","to":"u@other.test","proto":"ESMTP","helo":"spam.test","message":"NOQUEUE: reject"}`,
			[]string{"smtpd: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 <u@other.test>: Relay access denied; from=<s@x.test> to=<u@other.test> proto=ESMTP helo=<spam.test>"}},
		{`{"level":"info","component":"delivery","queue_id":"d25b3422tl52","to":"u@customer.tld","relay":"mx.customer.tld[192.0.2.7]:25","delay":1.234,"dsn":"2.0.0","status":"sent","reply":"250 2.0.0 Ok: queued as X","message":""}`,
			[]string{"smtp: d25b3422tl52: to=<u@customer.tld>, relay=mx.customer.tld[192.0.2.7]:25, delay=1.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"}},
		{`{"level":"info","component":"delivery","event":"tls_established","relay":"mx.customer.tld[192.0.2.7]:25","tls_trust":"Verified","tls_protocol":"TLSv1.3","tls_cipher":"TLS_AES_128_GCM_SHA256","tls_bits":128,"tls_level":"secure","message":"Verified TLS connection established"}`,
			[]string{"smtp: Verified TLS connection established to mx.customer.tld[192.0.2.7]:25: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)"}},
		{`{"level":"info","component":"smtpd","event":"tls_established","client":"mail.example.org[192.0.2.1]","tls_trust":"Anonymous","tls_protocol":"TLSv1.3","tls_cipher":"TLS_AES_256_GCM_SHA384","tls_bits":256,"message":"Anonymous TLS connection established"}`,
			[]string{"smtpd: Anonymous TLS connection established from mail.example.org[192.0.2.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"}},
		{`{"level":"info","component":"delivery","event":"tls_failed","relay":"mx.customer.tld[192.0.2.7]:25","tls_level":"verify","message":"certificate verification failed for mx.customer.tld[192.0.2.7]:25: self-signed certificate"}`,
			[]string{"smtp: certificate verification failed for mx.customer.tld[192.0.2.7]:25: self-signed certificate"}},
		{`{"level":"info","component":"delivery","queue_id":"d25b3422tl52","event":"removed","message":"removed"}`,
			[]string{"qmgr: d25b3422tl52: removed"}},
		{`{"level":"info","component":"delivery","queue_id":"d25b3422tl52","notice_id":"d25b3422tl60","to":"a@example.org","event":"bounce","message":"sender notification queued"}`,
			[]string{"bounce: d25b3422tl52: sender non-delivery notification: d25b3422tl60"}},
		{`{"level":"warn","component":"smtpd","conn_id":"s3","remote":"192.0.2.9","message":"unknown[192.0.2.9]: SASL LOGIN authentication failed: authentication failure","event":"auth_failed"}`,
			[]string{"smtpd: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: authentication failure"}},
		{`{"level":"info","component":"flush","event":"etrn","site":"customer.tld","messages":3,"message":"flush requested"}`,
			[]string{"flush: flush requested messages=3 site=customer.tld"}},
	} {
		var e event
		if err := json.Unmarshal([]byte(tc.json), &e); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range render(e) {
			got = append(got, l.prog+": "+l.text)
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("render %s:\n got %q\nwant %q", tc.json, got, tc.want)
		}
	}
}

// A maillog_file gets syslog-format lines, and is reopened by name after
// logrotate moved it.
func TestFileAndRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	now := time.Date(2026, 11, 30, 4, 5, 6, 0, time.UTC)
	w, err := New(Options{Name: "holdfast", File: path, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte(`{"level":"info","component":"delivery","queue_id":"q1","event":"removed","message":"removed"}` + "\n"))
	data, _ := os.ReadFile(path)
	want := "Nov 30 04:05:06 " + w.host + " holdfast/qmgr[" + strconv.Itoa(os.Getpid()) + "]: q1: removed\n"
	if string(data) != want {
		t.Fatalf("file: %q, want %q", data, want)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	w.out.(*fileSink).checked = time.Time{} // as if a second had passed
	w.Write([]byte(`{"level":"info","component":"delivery","queue_id":"q2","event":"removed","message":"removed"}`))
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "q2: removed") {
		t.Errorf("after rotation the new file has %q", data)
	}
	if data, _ := os.ReadFile(path + ".1"); strings.Contains(string(data), "q2") {
		t.Errorf("the rotated file got the new line")
	}
}

// Without a reachable syslog the lines go to the fallback, after one
// warning; a broken line of input is logged, not lost.
func TestSyslogFallback(t *testing.T) {
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Skip("/dev/log exists here: the fallback is not reached")
	}
	var buf bytes.Buffer
	w, err := New(Options{Name: "holdfast", Fallback: &buf})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(`{"level":"info","component":"delivery","queue_id":"q1","event":"removed","message":"removed"}`))
	w.Write([]byte("not json"))
	out := buf.String()
	for _, want := range []string{"holdfast/master[", "warning: syslog is not reachable", "holdfast/qmgr[", "q1: removed", "warning: not json"} {
		if !strings.Contains(out, want) {
			t.Errorf("fallback output lacks %q:\n%s", want, out)
		}
	}
}

// A full log file system (/dev/full answers every write with ENOSPC)
// loses log lines, counted, and never an error that would stop the
// daemon.
func TestFullLogFileSystem(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	w, err := New(Options{Name: "holdfast", File: "/dev/full"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := []byte(`{"level":"info","component":"delivery","queue_id":"q1","event":"removed","message":"removed"}`)
	if n, err := w.Write(p); err != nil || n != len(p) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w.Dropped() != 1 {
		t.Errorf("Dropped = %d, want 1", w.Dropped())
	}
}
