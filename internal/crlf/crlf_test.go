package crlf

import (
	"bytes"
	"testing"
)

func TestWriter(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bareLF   bool
	}{
		{"", "", false},
		{"a\r\nb\r\n", "a\r\nb\r\n", false},
		{"a\nb", "a\r\nb", true},
		{"hello\r.\rMAIL", "hello\r\n.\r\nMAIL", false},
		{"a\r\r\n", "a\r\n\r\n", false},
		{"a\r", "a\r\n", false},
		{"\n\r", "\r\n\r\n", true},
		{"\r\n\n", "\r\n\r\n", true},
	} {
		// Whole, and one byte per write: the same output.
		for _, step := range []int{len(tc.in) + 1, 1} {
			var b bytes.Buffer
			w := &Writer{W: &b}
			for p := []byte(tc.in); len(p) > 0; {
				n := min(step, len(p))
				if k, err := w.Write(p[:n]); k != n || err != nil {
					t.Fatalf("Write = %d, %v", k, err)
				}
				p = p[n:]
			}
			w.Close()
			if b.String() != tc.want || w.BareLF != tc.bareLF {
				t.Errorf("%q (step %d) -> %q, bareLF %v; want %q, %v", tc.in, step, b.String(), w.BareLF, tc.want, tc.bareLF)
			}
		}
	}
}
