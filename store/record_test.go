package store

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"
	"time"
)

func fullMessage() *Message {
	t0 := time.Unix(1772366400, 123456789)
	return &Message{
		ID: "0123456789ab", Sender: "s@example.org", Arrival: t0, Size: 1234, State: StateDeferred,
		Due: t0.Add(time.Hour), HeldFrom: StateIncoming, ClientAddr: "2001:db8::1", ClientName: "mx.example",
		Helo: "mx.example", Protocol: "ESMTPS", EnvID: "env-1", Ret: RetHdrs, SMTPUTF8: true, Body8Bit: true,
		WarnAt: t0.Add(4 * time.Hour), Expired: true,
		Recipients: []Recipient{
			{Addr: "User@customer.tld", Orig: "rfc822;user@customer.tld", Notify: NotifyFailure | NotifyDelay,
				State: RcptPending, Attempts: 3, NextAttempt: t0.Add(time.Hour), Forced: true, FlushPending: true,
				Reply: "connect to mail.customer.tld[192.0.2.7]:25: Connection refused", DSN: "4.4.1", RemoteMTA: "mail.customer.tld"},
			{Addr: "b@other.example", State: RcptDelivered, Reply: "250 2.0.0 Ok", DSN: "2.0.0"},
		},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	m := fullMessage()
	b := encodeMessage(m)
	got, err := decodeMessage(m.ID, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		// time.Time loses its monotonic reading and location; compare again
		// after normalising.
		if !sameMessage(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
	}
	t.Logf("record size for 2 recipients: %d bytes", len(b))
	if len(b) > 400 {
		t.Errorf("record unexpectedly large: %d bytes", len(b))
	}
}

func sameMessage(a, b *Message) bool {
	norm := func(m *Message) Message {
		c := *clone(m)
		c.Arrival, c.Due, c.WarnAt = c.Arrival.UTC(), c.Due.UTC(), c.WarnAt.UTC()
		for i := range c.Recipients {
			c.Recipients[i].NextAttempt = c.Recipients[i].NextAttempt.UTC()
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestRecordCorrupt(t *testing.T) {
	b := encodeMessage(fullMessage())
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := decodeMessage("0123456789ab", c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d: err %v", i, err)
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := decodeMessage("0123456789ab", b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: err %v", n, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(fullMessage()))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		// As given (almost always stopped by the checksum), and with the
		// checksum made right, so that the field decoder sees the bytes.
		fixed := binary.BigEndian.AppendUint32(append([]byte(nil), b...), crc32.Checksum(b, castagnoli))
		for _, in := range [][]byte{b, fixed} {
			m, err := decodeMessage("0123456789ab", in)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("decode error %v is not ErrCorrupt", err)
				}
				continue
			}
			if _, err := decodeMessage(m.ID, encodeMessage(m)); err != nil {
				t.Fatalf("re-encode of decoded record fails: %v", err)
			}
		}
	})
}
