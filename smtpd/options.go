package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/internal/tlscert"
)

// Table is a lookup table (check_*_access maps). config.Table satisfies it.
type Table interface {
	Lookup(key string) (value string, found bool, err error)
}

// DomainMatcher matches a domain against a list such as relay_domains.
// *config.DomainList satisfies it.
type DomainMatcher interface {
	Match(domain string) (bool, error)
}

// NetMatcher matches a client address against mynetworks.
// *config.NetList satisfies it.
type NetMatcher interface {
	Contains(ip netip.Addr) bool
}

// Resolver answers the DNS questions of the client name lookup and of
// the DNS-based restrictions. *dnsr.Resolver satisfies it.
type Resolver interface {
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
	LookupIP(ctx context.Context, name string) ([]netip.Addr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	// AddrName and HostAddrs consult /etc/hosts before the DNS, as the
	// system resolver does for Postfix's client name lookup.
	AddrName(ctx context.Context, a netip.Addr) (string, error)
	HostAddrs(ctx context.Context, name string) ([]netip.Addr, error)
}

// ReplyCodes are the configurable reply codes of the restrictions
// (Postfix's *_reject_code parameters; defaults in config/params.go).
type ReplyCodes struct {
	Reject          int // reject_code (554)
	Defer           int // defer_code (450)
	AccessReject    int // access_map_reject_code (554)
	AccessDefer     int // access_map_defer_code (450)
	RelayDomains    int // relay_domains_reject_code (554)
	UnknownClient   int // unknown_client_reject_code (450)
	UnknownHostname int // unknown_hostname_reject_code (450)
	UnknownAddress  int // unknown_address_reject_code (450)
	InvalidHostname int // invalid_hostname_reject_code (501)
	NonFQDN         int // non_fqdn_reject_code (504)
	RelayRecipient  int // unknown_relay_recipient_reject_code (550)
	MapsRBL         int // maps_rbl_reject_code (554): $rbl_code
	// Plaintext is plaintext_reject_code (450), MultiRecipientBounce
	// multi_recipient_bounce_reject_code (550).
	Plaintext, MultiRecipientBounce int
}

// Options are the typed settings of the SMTP server (STYLE §20): cmd
// builds them from the configuration with OptionsFromConfig, tests start
// from DefaultOptions; either way every default comes from the one
// defaults table, config/params.go. A zero value means zero (no limit, no
// sleep, no such header), as the parameter's Postfix description says.
type Options struct {
	// Listen are the addresses the daemon listens on (smtpd_listen);
	// Serve takes the listeners.
	Listen []string
	// Hostname is $myhostname: greeting, EHLO, Received:, 421 replies.
	Hostname string
	// Banner is the greeting text after "220 " (smtpd_banner).
	Banner string
	// MailName is $mail_name, shown in our Received: header ("holdfast").
	MailName string

	// MessageSizeLimit is message_size_limit in bytes; 0 = unlimited.
	MessageSizeLimit int64
	// HopcountLimit is hopcount_limit: a message with this many Received:
	// fields, ours included, is refused at the end of DATA (554 5.4.0),
	// as Postfix's cleanup does; 0 = no limit.
	HopcountLimit int
	// DisableVRFY is disable_vrfy_command.
	DisableVRFY bool
	// HeloRequired is smtpd_helo_required.
	HeloRequired bool
	// Limits are the deadlines, error limits and per-client limits in
	// force normally (Timeout is smtpd_timeout, default 300s, ...).
	Limits
	// Stress are the same limits under stress (the parameters read with
	// stress = yes, config.Stressed: Postfix's ${stress?...} values).
	Stress Limits
	// StressThreshold is the percentage of MaxConnections in use from
	// which the server is under stress (smtpd_stress_threshold, ours;
	// 0 or more than 100 = never).
	StressThreshold int
	// LineLengthLimit is line_length_limit: longer command
	// lines are cut there and the rest is skipped.
	LineLengthLimit int
	// RecipientLimit is smtpd_recipient_limit.
	RecipientLimit int
	// RecipientOvershootLimit is smtpd_recipient_overshoot_limit:
	// how many "too many recipients" replies are not counted as errors.
	RecipientOvershootLimit int
	// SoftErrorLimit and ErrorSleep are smtpd_soft_error_limit (10) and
	// smtpd_error_sleep_time (1s; 0 = no sleep).
	SoftErrorLimit int
	ErrorSleep     time.Duration
	// ConnectionLimitExceptions are exempt from the per-client limits
	// (smtpd_client_event_limit_exceptions, default $mynetworks).
	ConnectionLimitExceptions NetMatcher
	// RateTimeUnit is anvil_rate_time_unit (60s), the unit of the
	// per-client rates; ClientIPv4Prefix and ClientIPv6Prefix are
	// smtpd_client_ipv4_prefix_length (32) and
	// smtpd_client_ipv6_prefix_length (84): addresses in one such range
	// count as one client.
	RateTimeUnit     time.Duration
	ClientIPv4Prefix int
	ClientIPv6Prefix int
	// MaxConnections bounds the sessions (goroutines) of the server
	// (smtpd_connection_limit, ours, like Postfix's default_process_limit).
	MaxConnections int
	// ForbidUnauthPipelining is smtpd_forbid_unauth_pipelining: a client
	// that sends more input after a command that must end a pipelined
	// group (RFC 2920 sec 3.1), or pipelines after HELO, is answered
	// "554 5.5.0 Error: SMTP protocol synchronization" and disconnected.
	ForbidUnauthPipelining bool
	// BareNewline is smtpd_forbid_bare_newline (Postfix 3.9): how a line
	// that ends in a bare LF is treated. The zero value is Postfix's
	// default, normalize. Whatever the mode, stored content has CRLF line
	// ends only: a bare LF or bare CR is stored as CRLF.
	BareNewline BareNewline
	// BareNewlineExclusions are the clients treated as with
	// BareNewline = no (smtpd_forbid_bare_newline_exclusions, default
	// $mynetworks); nil matches nothing.
	BareNewlineExclusions NetMatcher
	// BareNewlineRejectCode is smtpd_forbid_bare_newline_reject_code
	// (550), the reply code with BareNewline = reject.
	BareNewlineRejectCode int

	// TLS enables STARTTLS when non-nil (smtpd_tls_cert_file/key_file).
	TLS *tls.Config
	// EnforceTLS is smtpd_tls_security_level = encrypt.
	EnforceTLS bool
	// Certs holds the certificate of TLS (its GetCertificate) when it
	// was loaded from files: the daemon's reload calls Certs.Reload, and
	// a change of the files is picked up at the next handshake.
	Certs *tlscert.Holder
	// TLSReceivedHeader is smtpd_tls_received_header: the protocol and
	// cipher in our Received: header.
	TLSReceivedHeader bool
	// TLSLogLevel is smtpd_tls_loglevel: 1 or more logs Postfix's "TLS
	// connection established" line per session.
	TLSLogLevel int

	// SASL configures AUTH (auth.go); the zero value is AUTH off.
	SASL SASLOptions

	// MyNetworks is mynetworks; nil matches nothing.
	MyNetworks NetMatcher
	// RelayDomains is relay_domains: destinations accepted from anyone.
	RelayDomains DomainMatcher

	// Restriction lists, one restriction (with its table argument) per
	// element, as in main.cf; nil or empty = no restrictions.
	ClientRestrictions    []string
	HeloRestrictions      []string
	SenderRestrictions    []string
	RelayRestrictions     []string
	RecipientRestrictions []string
	DataRestrictions      []string
	EODRestrictions       []string
	ETRNRestrictions      []string
	// RestrictionClasses are smtpd_restriction_classes: name -> list,
	// usable as a restriction or as an access table result.
	RestrictionClasses map[string][]string
	// OpenTable opens the type:table argument of check_*_access
	// (config.OpenTable). Required only when such a restriction is used.
	OpenTable func(spec string) (Table, error)
	// DelayReject is smtpd_delay_reject: client, helo and sender
	// restrictions answer at RCPT (and ETRN) instead of at connect, HELO
	// and MAIL.
	DelayReject bool
	// PeernameLookup is smtpd_peername_lookup: look up the client's
	// name (reverse DNS with forward confirmation); off, it is "unknown".
	PeernameLookup bool
	// Resolver answers DNS questions; nil = the system's name servers.
	Resolver Resolver
	// Codes are the restriction reply codes.
	Codes ReplyCodes
	// SoftBounce is soft_bounce: restriction 5XX replies become 4XX.
	SoftBounce bool
	// DefaultRBLReply is default_rbl_reply, a template ($rbl_code, ...);
	// RBLReplyMaps is rbl_reply_maps (nil = none).
	DefaultRBLReply string
	RBLReplyMaps    Table
	// RelayRecipients is relay_recipient_maps (nil = every recipient in
	// relay_domains is valid). RejectUnlistedRecipient is
	// smtpd_reject_unlisted_recipient: the map is applied at RCPT even
	// without reject_unlisted_recipient in a list. ShowUnknownTable is
	// show_user_unknown_table_name.
	RelayRecipients         Table
	RecipientDelimiter      string // recipient_delimiter: user+ext also finds user
	RejectUnlistedRecipient bool
	ShowUnknownTable        bool
	// NullAccessKey is smtpd_null_access_lookup_key ("<>"): the key
	// check_sender_access looks up for the null sender.
	NullAccessKey string

	// ETRNOwners is etrn_login_maps (nil = not set): who owns which
	// destination, for ETRN (etrn.go) and ATRN.
	ETRNOwners *auth.Owners

	// ETRNReplyCounts is etrn_reply_counts: answer ETRN with RFC 1985's
	// 251/253 replies instead of Postfix's "250 Queuing started".
	ETRNReplyCounts bool

	// DelayWarning is delay_warning_time: a message with a non-null
	// sender gets WarnAt = arrival + DelayWarning, when the scheduler
	// sends its one delay notice (Postfix's cleanup). 0 = no warnings.
	DelayWarning time.Duration

	// Now is the clock (Received: date, arrival); nil = time.Now.
	Now func() time.Time

	// Events, if not nil, is told of sessions for metrics.
	Events Events
}

// Events receives session counts. *metrics.Set satisfies it; smtpd
// does not import metrics.
type Events interface {
	// SessionOpened and SessionClosed bracket every session served
	// (connections refused at accept are not sessions).
	SessionOpened()
	SessionClosed()
	// SessionRejected counts a connection refused or a session ended by
	// policy; reason is one of "too_many_connections",
	// "too_many_connections_from_client", "errors" (smtpd_hard_error_limit)
	// and "pipelining" (smtpd_forbid_unauth_pipelining).
	SessionRejected(reason string)
}

// BareNewline is a value of smtpd_forbid_bare_newline.
type BareNewline int

// The values of smtpd_forbid_bare_newline, as Postfix 3.9's smtpd.c
// (bare_lf_mask_table) defines them.
const (
	// BareNewlineNormalize (also "yes", a migration alias): only
	// <CR><LF>.<CR><LF> ends DATA; a line ending in a bare LF is taken as
	// ending in CRLF, and a "." line that ends in, or follows a line that
	// ends in, a bare LF is dropped.
	BareNewlineNormalize BareNewline = iota
	// BareNewlineNote is normalize, and the session logs that it saw a
	// bare LF.
	BareNewlineNote
	// BareNewlineReject is normalize, and a command ending in a bare LF
	// is answered "550 5.5.2 <myhostname> Error: bare <LF> received" and
	// the client disconnected; a message with one gets that reply after
	// its end and is not queued.
	BareNewlineReject
	// BareNewlineNo: a bare LF ends a line everywhere, and a "." line
	// ends DATA whatever its line ends (vulnerable to SMTP smuggling).
	BareNewlineNo
)

// ParseBareNewline maps a smtpd_forbid_bare_newline value to its mode.
func ParseBareNewline(v string) (BareNewline, error) {
	switch v {
	case "normalize", "yes", "":
		return BareNewlineNormalize, nil
	case "note":
		return BareNewlineNote, nil
	case "reject":
		return BareNewlineReject, nil
	case "no":
		return BareNewlineNo, nil
	}
	return 0, fmt.Errorf("smtpd_forbid_bare_newline: bad value %q", v)
}

// DefaultOptions are the options of an empty configuration file: every
// value from the defaults table (config/params.go) read by
// OptionsFromConfig, with the host's name and networks. Tests start from
// them and set what they test, so they share the daemon's defaults.
func DefaultOptions() Options {
	return config.FromDefaults("smtpd", OptionsFromConfig)
}

// OptionsFromConfig builds the server's options from the main.cf-style
// configuration (Postfix's parameter names). Bad values are errors that
// name the parameter; restriction names are checked by New.
func OptionsFromConfig(c *config.Config) (Options, error) {
	var o Options
	for _, step := range []func(*config.Config, *Options) error{scalarsFromConfig, policyFromConfig, restrictFromConfig, tlsFromConfig, saslFromConfig} {
		if err := step(c, &o); err != nil {
			return Options{}, fmt.Errorf("smtpd: %w", err)
		}
	}
	return o, nil
}

// scalarsFromConfig reads the names, numbers and switches.
func scalarsFromConfig(c *config.Config, o *Options) error {
	var err error
	if o.Listen, err = c.List("smtpd_listen"); err != nil {
		return err
	}
	if err = config.Read(c.Expand, map[string]*string{"myhostname": &o.Hostname, "smtpd_banner": &o.Banner, "mail_name": &o.MailName}); err != nil {
		return err
	}
	if err = config.Read(c.Int, map[string]*int{
		"line_length_limit":                     &o.LineLengthLimit,
		"smtpd_recipient_limit":                 &o.RecipientLimit,
		"smtpd_recipient_overshoot_limit":       &o.RecipientOvershootLimit,
		"smtpd_soft_error_limit":                &o.SoftErrorLimit,
		"smtpd_forbid_bare_newline_reject_code": &o.BareNewlineRejectCode,
		"smtpd_connection_limit":                &o.MaxConnections,
		"smtpd_stress_threshold":                &o.StressThreshold,
		"smtpd_client_ipv4_prefix_length":       &o.ClientIPv4Prefix,
		"smtpd_client_ipv6_prefix_length":       &o.ClientIPv6Prefix,
		"hopcount_limit":                        &o.HopcountLimit,
	}); err != nil {
		return err
	}
	if err = config.Read(c.Bool, map[string]*bool{
		"disable_vrfy_command":            &o.DisableVRFY,
		"smtpd_helo_required":             &o.HeloRequired,
		"etrn_reply_counts":               &o.ETRNReplyCounts,
		"smtpd_forbid_unauth_pipelining":  &o.ForbidUnauthPipelining,
		"smtpd_enforce_tls":               &o.EnforceTLS,
		"smtpd_delay_reject":              &o.DelayReject,
		"smtpd_peername_lookup":           &o.PeernameLookup,
		"soft_bounce":                     &o.SoftBounce,
		"smtpd_reject_unlisted_recipient": &o.RejectUnlistedRecipient,
		"show_user_unknown_table_name":    &o.ShowUnknownTable,
	}); err != nil {
		return err
	}
	if o.MessageSizeLimit, err = c.Size("message_size_limit"); err != nil {
		return err
	}
	if o.ClientIPv4Prefix > 32 || o.ClientIPv6Prefix > 128 {
		return fmt.Errorf("smtpd_client_ipv4_prefix_length (at most 32) or smtpd_client_ipv6_prefix_length (at most 128) too large")
	}
	if o.BareNewline, err = ParseBareNewline(c.String("smtpd_forbid_bare_newline")); err != nil {
		return err
	}
	return timesFromConfig(c, o)
}

// timesFromConfig reads the times and the limits that change under
// stress.
func timesFromConfig(c *config.Config, o *Options) error {
	var err error
	if err = config.Read(c.Time, map[string]*time.Duration{
		"anvil_rate_time_unit": &o.RateTimeUnit, "smtpd_error_sleep_time": &o.ErrorSleep, "delay_warning_time": &o.DelayWarning,
	}); err != nil {
		return err
	}
	if o.Limits, err = limitsFromConfig(c); err != nil {
		return err
	}
	o.Stress, err = limitsFromConfig(c.Stressed())
	return err
}

// limitsFromConfig reads the limits that depend on stress; c is the
// configuration as it reads normally or under stress (config.Stressed).
func limitsFromConfig(c *config.Config) (Limits, error) {
	var l Limits
	var err error
	if err = config.Read(c.Int, map[string]*int{
		"smtpd_hard_error_limit":                  &l.HardErrorLimit,
		"smtpd_junk_command_limit":                &l.JunkCommandLimit,
		"smtpd_min_data_rate":                     &l.MinDataRate,
		"smtpd_client_connection_count_limit":     &l.ClientConnectionLimit,
		"smtpd_client_connection_rate_limit":      &l.ClientConnectionRateLimit,
		"smtpd_client_message_rate_limit":         &l.ClientMessageRateLimit,
		"smtpd_client_recipient_rate_limit":       &l.ClientRecipientRateLimit,
		"smtpd_client_new_tls_session_rate_limit": &l.ClientNewTLSRateLimit,
		"smtpd_client_etrn_rate_limit":            &l.ClientETRNRateLimit,
	}); err != nil {
		return l, err
	}
	if l.PerRequestDeadline, err = c.Bool("smtpd_per_request_deadline"); err != nil {
		return l, err
	}
	err = config.Read(c.Time, map[string]*time.Duration{
		"smtpd_timeout": &l.Timeout, "smtpd_transaction_deadline": &l.TransactionDeadline, "smtpd_starttls_timeout": &l.StartTLSTimeout,
	})
	return l, err
}

// policyFromConfig reads mynetworks, relay_domains and the restriction
// lists (parsed by New).
func policyFromConfig(c *config.Config, o *Options) error {
	nets, err := c.Networks("mynetworks")
	if err != nil {
		return err
	}
	o.MyNetworks = nets
	ex, err := c.Networks("smtpd_client_event_limit_exceptions")
	if err != nil {
		return err
	}
	o.ConnectionLimitExceptions = ex
	if o.BareNewlineExclusions, err = c.Networks("smtpd_forbid_bare_newline_exclusions"); err != nil {
		return err
	}
	relay, err := c.Domains("relay_domains")
	if err != nil {
		return err
	}
	o.RelayDomains = relay
	if err = config.Read(c.List, map[string]*[]string{
		"smtpd_client_restrictions":      &o.ClientRestrictions,
		"smtpd_helo_restrictions":        &o.HeloRestrictions,
		"smtpd_sender_restrictions":      &o.SenderRestrictions,
		"smtpd_relay_restrictions":       &o.RelayRestrictions,
		"smtpd_recipient_restrictions":   &o.RecipientRestrictions,
		"smtpd_data_restrictions":        &o.DataRestrictions,
		"smtpd_end_of_data_restrictions": &o.EODRestrictions,
		"smtpd_etrn_restrictions":        &o.ETRNRestrictions,
	}); err != nil {
		return err
	}
	o.OpenTable = func(spec string) (Table, error) { return config.OpenTable(spec) }
	return nil
}

// restrictFromConfig reads the restriction classes, reply codes, DNS
// list replies, relay_recipient_maps and the resolver (dns_resolver).
func restrictFromConfig(c *config.Config, o *Options) error {
	classes, err := c.List("smtpd_restriction_classes")
	if err != nil {
		return err
	}
	o.RestrictionClasses = map[string][]string{}
	for _, name := range classes {
		items, err := c.List(name)
		if err != nil {
			return err
		}
		if _, ok := c.Raw(name); !ok {
			return fmt.Errorf("smtpd_restriction_classes: class %s has no definition", name)
		}
		o.RestrictionClasses[name] = items
	}
	if err = config.Read(c.Int, map[string]*int{
		"reject_code": &o.Codes.Reject, "defer_code": &o.Codes.Defer,
		"access_map_reject_code": &o.Codes.AccessReject, "access_map_defer_code": &o.Codes.AccessDefer,
		"relay_domains_reject_code": &o.Codes.RelayDomains, "unknown_client_reject_code": &o.Codes.UnknownClient,
		"unknown_hostname_reject_code": &o.Codes.UnknownHostname, "unknown_address_reject_code": &o.Codes.UnknownAddress,
		"invalid_hostname_reject_code": &o.Codes.InvalidHostname, "non_fqdn_reject_code": &o.Codes.NonFQDN,
		"unknown_relay_recipient_reject_code": &o.Codes.RelayRecipient, "maps_rbl_reject_code": &o.Codes.MapsRBL,
		"plaintext_reject_code": &o.Codes.Plaintext, "multi_recipient_bounce_reject_code": &o.Codes.MultiRecipientBounce,
	}); err != nil {
		return err
	}
	o.DefaultRBLReply, _ = c.Raw("default_rbl_reply")
	o.NullAccessKey = c.String("smtpd_null_access_lookup_key")
	o.RecipientDelimiter = c.String("recipient_delimiter")
	if o.RBLReplyMaps, err = optionalTable(c, "rbl_reply_maps"); err != nil {
		return err
	}
	if o.RelayRecipients, err = optionalTable(c, "relay_recipient_maps"); err != nil {
		return err
	}
	r, err := dnsr.New(dnsr.Options{Server: c.String("dns_resolver")})
	if err != nil {
		return fmt.Errorf("dns_resolver: %w", err)
	}
	o.Resolver = r
	return nil
}

// optionalTable opens a maps parameter; nil when it is empty.
func optionalTable(c *config.Config, name string) (Table, error) {
	specs, err := c.List(name)
	if err != nil || len(specs) == 0 {
		return nil, err
	}
	t, err := c.Table(name)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// tlsFromConfig loads smtpd_tls_cert_file/key_file; level "none" turns
// STARTTLS off, "encrypt" (or smtpd_enforce_tls) requires it, with the
// TLS versions of smtpd_tls_mandatory_protocols instead of
// smtpd_tls_protocols, as Postfix.
func tlsFromConfig(c *config.Config, o *Options) error {
	var err error
	if o.TLSReceivedHeader, err = c.Bool("smtpd_tls_received_header"); err != nil {
		return err
	}
	if o.TLSLogLevel, err = c.Int("smtpd_tls_loglevel"); err != nil {
		return err
	}
	if err := tlscert.CipherGrade(c.String("smtpd_tls_ciphers")); err != nil {
		return fmt.Errorf("smtpd_tls_ciphers: %w", err)
	}
	level := c.String("smtpd_tls_security_level")
	cert, key := c.String("smtpd_tls_cert_file"), c.String("smtpd_tls_key_file")
	if level == "encrypt" {
		o.EnforceTLS = true
	}
	if level == "none" || cert == "" {
		if o.EnforceTLS {
			return fmt.Errorf("smtpd_tls_security_level: TLS required but smtpd_tls_cert_file is not set")
		}
		return nil
	}
	if key == "" {
		key = cert
	}
	protoParam := "smtpd_tls_protocols"
	if o.EnforceTLS {
		protoParam = "smtpd_tls_mandatory_protocols"
	}
	for _, p := range []string{"smtpd_tls_protocols", "smtpd_tls_mandatory_protocols"} {
		if _, _, err := tlscert.ProtocolRange(c.String(p)); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	h, err := tlscert.Load(cert, key)
	if err != nil {
		return fmt.Errorf("smtpd_tls_cert_file: %w", err)
	}
	if o.TLS, err = h.ServerConfig(c.String(protoParam)); err != nil {
		return fmt.Errorf("%s: %w", protoParam, err)
	}
	o.Certs = h
	return nil
}
