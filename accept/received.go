package accept

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/holdfast-mta/holdfast/internal/tlscert"
	"github.com/holdfast-mta/holdfast/store"
)

// Trace is what our Received: header says of a message (RFC 5321 sec
// 4.4), in Postfix's layout.
type Trace struct {
	// Helo, ClientName and ClientAddr (in its RFC 5321 form, "IPv6:..."
	// for IPv6) name the SMTP client: "from HELO (NAME [ADDR])". A local
	// submission has no client: the header starts with "by".
	Helo, ClientName, ClientAddr string
	// TLS, when set, adds the TLS comment (smtpd_tls_received_header).
	TLS *tls.ConnectionState
	// AuthSender, when set, adds "(Authenticated sender: ...)"
	// (smtpd_sasl_authenticated_header).
	AuthSender string
	// By is our host name (myhostname), MailName our name (mail_name).
	By, MailName string
	// Protocol is "ESMTP", "LOCAL", ...
	Protocol string
	ID       store.ID
	// For, when set, is the one recipient: "for <rcpt>".
	For  string
	Date time.Time
}

// dateLayout is Postfix's mail_date: RFC 5322 with the day padded by a
// space and the zone's name as a comment.
const dateLayout = "Mon, _2 Jan 2006 15:04:05 -0700 (MST)"

// Received renders the Received: header of t, as Postfix's smtpd (and
// its cleanup for local mail) writes it.
func Received(t Trace) string { return string(AppendReceived(nil, t)) }

// AppendReceived appends Received's rendering of t to b (smtpd renders
// into a buffer its session keeps).
func AppendReceived(b []byte, t Trace) []byte {
	by := "\tby "
	if t.ClientName == "" {
		by = "Received: by "
	} else {
		helo := t.Helo
		if helo == "" {
			helo = t.ClientName
		}
		b = append(b, "Received: from "...)
		b = append(b, helo...)
		b = append(b, " ("...)
		b = append(b, t.ClientName...)
		b = append(b, " ["...)
		b = append(b, t.ClientAddr...)
		b = append(b, "])\r\n"...)
		if t.TLS != nil {
			b = append(b, tlsComment(t.TLS)...)
		}
		if t.AuthSender != "" {
			b = append(b, "\t(Authenticated sender: "...)
			b = append(b, t.AuthSender...)
			b = append(b, ")\r\n"...)
		}
	}
	b = append(b, by...)
	b = append(b, t.By...)
	b = append(b, " ("...)
	b = append(b, t.MailName...)
	b = append(b, ") with "...)
	b = append(b, t.Protocol...)
	b = append(b, " id "...)
	b = append(b, t.ID...)
	if t.For != "" {
		b = append(b, "\r\n\tfor <"...)
		b = append(b, t.For...)
		b = append(b, ">; "...)
	} else {
		b = append(b, ";\r\n\t"...)
	}
	b = t.Date.AppendFormat(b, dateLayout)
	return append(b, "\r\n"...)
}

// tlsComment is the TLS part of the Received: header with
// smtpd_tls_received_header = yes, in Postfix's words (smtpd.c): the
// protocol, the cipher and the key exchange, and whether a client
// certificate was asked for (never, as Postfix's smtpd_tls_ask_ccert = no).
func tlsComment(st *tls.ConnectionState) string {
	bits := tlscert.CipherBits(st.CipherSuite)
	c := fmt.Sprintf("\t(using %s with cipher %s (%d/%d bits)", tlscert.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), bits, bits)
	if st.CurveID != 0 {
		c += "\r\n\t key-exchange " + st.CurveID.String()
	}
	return c + ")\r\n\t(No client certificate requested)\r\n"
}
