package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Record encoding of a Message (the value in bucket msg). Explicit and
// versioned so that a later binary can read every earlier record:
//
//	byte    version (recordV1)
//	...     fields of that version, in a fixed order
//	[4]byte CRC-32C of everything before it
//
// Version 1 fields: flags byte (1 SMTPUTF8, 2 Body8Bit, 4 Expired), state,
// held-from, ret, then sender, arrival, size, due, warn-at, client addr,
// client name, helo, protocol, envid, recipient count, and per recipient:
// addr, orig, notify, state, flags (1 Forced, 2 FlushPending), attempts,
// next attempt, reply, dsn, remote MTA. Strings are uvarint length +
// bytes, integers uvarint, times signed varint Unix nanoseconds with 0 for
// the zero time. The ID is the key and is not repeated in the value.
//
// A new version adds a decodeVn and leaves decodeV1 untouched; encode
// always writes the newest version.
const recordV1 = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errShort = errors.New("record truncated")

func encodeMessage(m *Message) []byte {
	b := make([]byte, 0, 128+len(m.Recipients)*64)
	b = append(b, recordV1)
	var flags byte
	if m.SMTPUTF8 {
		flags |= 1
	}
	if m.Body8Bit {
		flags |= 2
	}
	if m.Expired {
		flags |= 4
	}
	b = append(b, flags, byte(m.State), byte(m.HeldFrom), byte(m.Ret))
	b = appendString(b, m.Sender)
	b = appendTime(b, m.Arrival)
	b = binary.AppendUvarint(b, uint64(max(m.Size, 0)))
	b = appendTime(b, m.Due)
	b = appendTime(b, m.WarnAt)
	for _, s := range []string{m.ClientAddr, m.ClientName, m.Helo, m.Protocol, m.EnvID} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Recipients)))
	for i := range m.Recipients {
		r := &m.Recipients[i]
		b = appendString(b, r.Addr)
		b = appendString(b, r.Orig)
		var rf byte
		if r.Forced {
			rf |= 1
		}
		if r.FlushPending {
			rf |= 2
		}
		b = append(b, byte(r.Notify), byte(r.State), rf)
		b = binary.AppendUvarint(b, uint64(max(r.Attempts, 0)))
		b = appendTime(b, r.NextAttempt)
		b = appendString(b, r.Reply)
		b = appendString(b, r.DSN)
		b = appendString(b, r.RemoteMTA)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// decodeMessage decodes a record of any known version. Every failure
// wraps ErrCorrupt.
func decodeMessage(id ID, v []byte) (*Message, error) {
	if len(v) < 5 {
		return nil, fmt.Errorf("%w: %s: %d bytes", ErrCorrupt, id, len(v))
	}
	body, sum := v[:len(v)-4], binary.BigEndian.Uint32(v[len(v)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: %s: checksum mismatch", ErrCorrupt, id)
	}
	var m *Message
	var err error
	switch body[0] {
	case recordV1:
		m, err = decodeV1(body[1:])
	default:
		err = fmt.Errorf("unknown record version %d", body[0])
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, id, err)
	}
	m.ID = id
	return m, nil
}

// reader consumes a record; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if uint64(len(r.b)) < n {
		r.err = errShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) time() time.Time {
	if r.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return time.Time{}
	}
	r.b = r.b[n:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}

func decodeV1(b []byte) (*Message, error) {
	r := &reader{b: b}
	m := &Message{}
	flags := r.byte()
	m.SMTPUTF8, m.Body8Bit, m.Expired = flags&1 != 0, flags&2 != 0, flags&4 != 0
	m.State, m.HeldFrom, m.Ret = State(r.byte()), State(r.byte()), Ret(r.byte())
	m.Sender = r.string()
	m.Arrival = r.time()
	m.Size = int64(r.uvarint())
	m.Due = r.time()
	m.WarnAt = r.time()
	m.ClientAddr, m.ClientName, m.Helo = r.string(), r.string(), r.string()
	m.Protocol, m.EnvID = r.string(), r.string()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		return nil, fmt.Errorf("recipient count %d exceeds record", n)
	}
	if n > 0 && r.err == nil {
		m.Recipients = make([]Recipient, n)
	}
	for i := 0; i < len(m.Recipients) && r.err == nil; i++ {
		rc := &m.Recipients[i]
		rc.Addr, rc.Orig = r.string(), r.string()
		rc.Notify, rc.State = Notify(r.byte()), RcptState(r.byte())
		rf := r.byte()
		rc.Forced, rc.FlushPending = rf&1 != 0, rf&2 != 0
		rc.Attempts = int(r.uvarint())
		rc.NextAttempt = r.time()
		rc.Reply, rc.DSN, rc.RemoteMTA = r.string(), r.string(), r.string()
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if m.State < StateIncoming || m.State > StateHold {
		return nil, fmt.Errorf("bad state %d", m.State)
	}
	return m, nil
}
