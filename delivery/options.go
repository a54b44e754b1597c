package delivery

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/dnsr"
	"github.com/holdfast-mta/holdfast/store"
)

// TransportTable is the transport map: Lookup(addr) gives the
// "transport:nexthop" result for a recipient with Postfix's search order.
// *config.TransportMap satisfies it.
type TransportTable interface {
	Lookup(addr string) (value string, found bool, err error)
}

// Timeouts are Postfix's smtp(8) time limits, one per protocol stage.
type Timeouts struct {
	Connect  time.Duration // smtp_connect_timeout
	Helo     time.Duration // smtp_helo_timeout (greeting and EHLO)
	StartTLS time.Duration // smtp_starttls_timeout
	Mail     time.Duration // smtp_mail_timeout
	Rcpt     time.Duration // smtp_rcpt_timeout
	DataInit time.Duration // smtp_data_init_timeout (DATA -> 354)
	DataXfer time.Duration // smtp_data_xfer_timeout (sending the content)
	DataDone time.Duration // smtp_data_done_timeout (final dot -> reply)
	Rset     time.Duration // smtp_rset_timeout
	Quit     time.Duration // smtp_quit_timeout
	// Delivery bounds one mail transaction as a whole, from MAIL FROM to
	// the reply after the final dot (smtp_delivery_deadline, ours): the
	// stage limits above apply to each command, so a server that answers
	// each RCPT just in time could otherwise hold a delivery for hours.
	Delivery time.Duration
}

// Options configure a Scheduler. OptionsFromConfig fills them from the
// configuration, tests start from DefaultOptions; either way every default
// comes from the one defaults table, config/params.go. A zero value means
// zero, as the parameter's Postfix description says (no limit, one
// attempt, no deadline).
type Options struct {
	// Hostname is myhostname: the Reporting-MTA of DSNs and the name in
	// their text.
	Hostname string
	// Self reports whether an address is one holdfast itself receives mail
	// on (its smtpd_listen sockets, proxy_interfaces): delivering there is
	// a loop. nil = no address check. A next hop that greets with
	// Hostname is a loop too.
	Self func(netip.AddrPort) bool
	// HeloName is smtp_helo_name, sent in EHLO.
	HeloName string
	// Relayhost is used for recipients without a transport map entry
	// ("[host]", "[host]:port", "host", "host:port"); "" = the domain.
	Relayhost string
	// Transports is transport_maps; nil = none.
	Transports TransportTable
	// TransportDefs are the transports defined in master.cf (master_cf)
	// and the built-in lmtp with the lmtp_* parameters, by name; they
	// replace the built-in ones of the same name (see Transport).
	TransportDefs map[string]*Transport
	// DefaultTransport is default_transport ("smtp"): the transport of a
	// recipient without a transport map entry whose domain is not in
	// RelayDomains. RelayTransport is relay_transport ("relay", an SMTP
	// transport of its own): the transport of a recipient in RelayDomains
	// without a map entry, as Postfix's trivial-rewrite resolves it. Both
	// may name a next hop ("relay:[gateway]"), which overrides Relayhost.
	DefaultTransport, RelayTransport string
	// RelayDomains is relay_domains; nil = none.
	RelayDomains DomainMatcher
	// SoftBounce is soft_bounce: 5xx replies defer instead of bouncing.
	SoftBounce bool
	// DeferTransports is defer_transports: such recipients wait for a flush.
	DeferTransports []string
	// MinBackoff, MaxBackoff are minimal_/maximal_backoff_time; MinBackoff
	// is also how long a dead destination stays dead (Postfix).
	MinBackoff, MaxBackoff time.Duration
	// QueueRunDelay bounds the scheduler's sleep (queue_run_delay).
	QueueRunDelay time.Duration
	// MaxQueueLifetime, BounceQueueLifetime: expiry for normal and for
	// null-sender mail (maximal_queue_lifetime, bounce_queue_lifetime;
	// 0 = one attempt). OptionsFromConfig clips BounceQueueLifetime to
	// MaxQueueLifetime, as Postfix's qmgr.
	MaxQueueLifetime, BounceQueueLifetime time.Duration
	// DelayWarning is delay_warning_time, shown in the delay notice text;
	// the time itself is the message's WarnAt.
	DelayWarning time.Duration
	// Concurrency is the global limit of SMTP transactions in progress at
	// once (delivery_concurrency_limit).
	Concurrency int
	// ActiveLimit bounds the messages leased at once
	// (qmgr_message_active_limit). A leased message waiting for its
	// destination's connection holds no Concurrency slot, so one slow
	// destination cannot hold up the others (Postfix's per-destination
	// queues).
	ActiveLimit int
	// DestinationLimit gives the connection limit per next hop for a
	// transport (<transport>_destination_concurrency_limit, else
	// default_destination_concurrency_limit); nil = DefaultDestinationLimit.
	DestinationLimit func(transport string) int
	// DefaultDestinationLimit is default_destination_concurrency_limit
	// (0 = no limit but Concurrency).
	DefaultDestinationLimit int
	// RecipientLimit gives the most recipients of one message sent in one
	// transaction for a transport (<transport>_destination_recipient_limit,
	// else default_destination_recipient_limit); more make more
	// transactions. nil = DefaultRecipientLimit; 0 = no limit.
	RecipientLimit func(transport string) int
	// DefaultRecipientLimit is default_destination_recipient_limit.
	DefaultRecipientLimit int
	// Timeouts of the SMTP client.
	Timeouts Timeouts
	// ConnCacheTime is how long an idle connection is kept for reuse
	// (smtp_connection_cache_time_limit, 2s in Postfix).
	ConnCacheTime time.Duration
	// TLSLevel is smtp_tls_security_level (a TLS* constant).
	TLSLevel string
	// TLS are the other smtp_tls_* settings.
	TLS *TLSSettings
	// DNS enables MX and address lookups in the DNS (smtp_host_lookup
	// contains "dns" and disable_dns_lookups = no); otherwise next hops are
	// resolved with the system resolver (native) and MX records are not
	// used, as Postfix does.
	DNS bool
	// DNSServer is dns_resolver: when set ("127.0.0.1:5353"), the only
	// DNS server asked. Resolver, when set, is used instead (the daemon's
	// one resolver, shared with smtpd, so they share its cache).
	DNSServer string
	Resolver  *dnsr.Resolver
	// Port is the TCP port of a next hop given without one: smtpPort
	// (tests point it at their own server).
	Port int
	// BindAddress, BindAddress6: smtp_bind_address, smtp_bind_address6.
	BindAddress, BindAddress6 netip.Addr
	// MXAddressLimit caps the addresses tried per delivery
	// (smtp_mx_address_limit; 0 = no limit).
	MXAddressLimit int
	// BounceSizeLimit is bounce_size_limit: a larger original is returned
	// as headers only.
	BounceSizeLimit int64
	// Clock is the time source; nil = the system clock (New).
	Clock Clock
	// ShutdownGrace bounds how long Run waits for in-flight deliveries
	// after its context ends (shutdown_timeout, as for SMTP sessions:
	// both stop together; 0 = cut at once); then they are cut and their
	// messages returned to the queue (Unlease).
	ShutdownGrace time.Duration
	// LeaseBatch is the most messages leased per store transaction
	// (leaseBatch; not a parameter).
	LeaseBatch int
	// Events, if not nil, is told of every recipient outcome and the
	// duration of every SMTP transaction (the metrics).
	Events Events
	// Feed, if not nil, is told of every recipient outcome too: the
	// outcome feed behind holdfast flush --wait (*follow.Feed).
	Feed Outcomes
	// Warnings are the start-up findings of OptionsFromConfig for the
	// operator's log: transport table entries naming a transport holdfast
	// cannot run (with file and line), master.cf services and -o options
	// it does not apply.
	Warnings []string
}

// DomainMatcher matches a recipient domain against a domain list.
// *config.DomainList satisfies it.
type DomainMatcher interface {
	Match(domain string) (bool, error)
}

// Outcomes receives each recipient outcome after store.Finish committed
// it; status is "sent", "deferred", "bounced" or "expired".
type Outcomes interface {
	Outcome(id store.ID, addr, status string)
}

// outcome tells Events and Feed one committed recipient outcome.
func (o *Options) outcome(id store.ID, addr, status string) {
	if o.Events != nil {
		o.Events.Outcome(id, addr, status)
	}
	if o.Feed != nil {
		o.Feed.Outcome(id, addr, status)
	}
}

// Events receives what the scheduler did. *metrics.Set satisfies it;
// delivery does not import metrics.
type Events interface {
	// Outcome is called once per recipient outcome after store.Finish
	// committed it; status is "sent", "deferred", "bounced" or "expired".
	Outcome(id store.ID, addr, status string)
	// ObserveDelivery is called with the duration of each SMTP mail
	// transaction (from MAIL FROM to the last reply).
	ObserveDelivery(d time.Duration)
}

// TLSEvents, if the Events value has it, is told the TLS of the session
// of each recipient outcome that had one: tls is "none", "untrusted",
// "trusted" or "verified" (metrics count deliveries by TLS outcome).
type TLSEvents interface {
	TLSOutcome(tls, status string)
}

// smtpPort is the port of a next hop given without one, Postfix's "smtp"
// service; leaseBatch is the most messages leased per transaction.
const (
	smtpPort   = 25
	leaseBatch = 100
)

// DefaultOptions are the options of an empty configuration file: every
// value from the defaults table (config/params.go) read by
// OptionsFromConfig, with the host's name. Tests start from them and set
// what they test, so they share the daemon's defaults.
func DefaultOptions() Options {
	return config.FromDefaults("delivery", OptionsFromConfig)
}

// OptionsFromConfig reads the delivery parameters from c.
func OptionsFromConfig(c *config.Config) (Options, error) {
	o := Options{Port: smtpPort, LeaseBatch: leaseBatch}
	var err error
	o.Hostname = c.String("myhostname")
	o.HeloName = c.String("smtp_helo_name")
	o.Relayhost = c.String("relayhost")
	o.DefaultTransport = c.String("default_transport")
	o.RelayTransport = c.String("relay_transport")
	o.DNSServer = c.String("dns_resolver")
	rd, err := c.Domains("relay_domains")
	if err != nil {
		return o, err
	}
	if !rd.Empty() {
		o.RelayDomains = rd
	}
	if o.SoftBounce, err = c.Bool("soft_bounce"); err != nil {
		return o, err
	}
	if o.DeferTransports, err = c.List("defer_transports"); err != nil {
		return o, err
	}
	tm, err := c.Transport()
	if err != nil {
		return o, err
	}
	if tm != nil {
		o.Transports = tm
	}
	if err := scalarsFromConfig(c, &o); err != nil {
		return o, err
	}
	if err := lookupOptions(c, &o); err != nil {
		return o, err
	}
	if o.Warnings, err = transportsFromConfig(c, &o); err != nil {
		return o, err
	}
	w, err := transportWarnings(c, o)
	if err != nil {
		return o, err
	}
	o.Warnings = append(o.Warnings, w...)
	if (o.TLSLevel == TLSDane || o.TLSLevel == TLSDaneOnly) && (!o.TLS.DNSSEC || !o.DNS) {
		o.Warnings = append(o.Warnings, fmt.Sprintf("smtp_tls_security_level = %s needs DNS lookups with smtp_dns_support_level = dnssec (and a validating dns_resolver): until then dane acts as may and dane-only defers mail (4.7.5 client TLS configuration problem)", o.TLSLevel))
	}
	return o, nil
}

// scalarsFromConfig reads the times and limits of the scheduler and the
// SMTP client.
func scalarsFromConfig(c *config.Config, o *Options) error {
	var err error
	if err = config.Read(c.Time, map[string]*time.Duration{
		"minimal_backoff_time":             &o.MinBackoff,
		"maximal_backoff_time":             &o.MaxBackoff,
		"queue_run_delay":                  &o.QueueRunDelay,
		"maximal_queue_lifetime":           &o.MaxQueueLifetime,
		"bounce_queue_lifetime":            &o.BounceQueueLifetime,
		"delay_warning_time":               &o.DelayWarning,
		"smtp_connect_timeout":             &o.Timeouts.Connect,
		"smtp_helo_timeout":                &o.Timeouts.Helo,
		"smtp_starttls_timeout":            &o.Timeouts.StartTLS,
		"smtp_mail_timeout":                &o.Timeouts.Mail,
		"smtp_rcpt_timeout":                &o.Timeouts.Rcpt,
		"smtp_data_init_timeout":           &o.Timeouts.DataInit,
		"smtp_data_xfer_timeout":           &o.Timeouts.DataXfer,
		"smtp_data_done_timeout":           &o.Timeouts.DataDone,
		"smtp_quit_timeout":                &o.Timeouts.Quit,
		"smtp_rset_timeout":                &o.Timeouts.Rset,
		"smtp_delivery_deadline":           &o.Timeouts.Delivery,
		"smtp_connection_cache_time_limit": &o.ConnCacheTime,
		"shutdown_timeout":                 &o.ShutdownGrace,
	}); err != nil {
		return err
	}
	// Postfix's qmgr: the longest backoff is at least the shortest, and
	// null-sender mail is kept no longer than other mail.
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	o.BounceQueueLifetime = min(o.BounceQueueLifetime, o.MaxQueueLifetime)
	if err = config.Read(c.Int, map[string]*int{
		"delivery_concurrency_limit":            &o.Concurrency,
		"qmgr_message_active_limit":             &o.ActiveLimit,
		"default_destination_concurrency_limit": &o.DefaultDestinationLimit,
		"smtp_mx_address_limit":                 &o.MXAddressLimit,
	}); err != nil {
		return err
	}
	if o.BounceSizeLimit, err = c.Size("bounce_size_limit"); err != nil {
		return err
	}
	o.DestinationLimit = perTransport(c, "_destination_concurrency_limit", o.DefaultDestinationLimit)
	if o.DefaultRecipientLimit, err = c.Int("default_destination_recipient_limit"); err != nil {
		return err
	}
	o.RecipientLimit = perTransport(c, "_destination_recipient_limit", o.DefaultRecipientLimit)
	return nil
}

// perTransport reads <transport><suffix> (a qmgr limit such as
// smtp_destination_concurrency_limit), else def.
func perTransport(c *config.Config, suffix string, def int) func(string) int {
	return func(transport string) int {
		name := transport + suffix
		if !known(c, name) {
			return def
		}
		n, err := c.Int(name)
		if err != nil { // an unknown name with a bad value (a warning at load)
			return def
		}
		return n
	}
}

// known reports whether c has a value for name (set, or in the defaults).
func known(c *config.Config, name string) bool {
	_, ok := c.Raw(name)
	return ok
}

// lookupOptions reads smtp_host_lookup, disable_dns_lookups and
// smtp_tls_security_level.
func lookupOptions(c *config.Config, o *Options) error {
	off, err := c.Bool("disable_dns_lookups")
	if err != nil {
		return err
	}
	methods, err := c.List("smtp_host_lookup")
	if err != nil {
		return err
	}
	for _, m := range methods {
		if strings.EqualFold(m, "dns") {
			o.DNS = !off
		}
	}
	if o.TLSLevel, err = tlsLevel(c, "smtp_tls_security_level"); err != nil {
		return err
	}
	if o.TLS, err = TLSFromConfig(c); err != nil {
		return err
	}
	if o.BindAddress, err = bindAddress(c, "smtp_bind_address", false); err != nil {
		return err
	}
	o.BindAddress6, err = bindAddress(c, "smtp_bind_address6", true)
	return err
}

// destLimit is the connection limit for one next hop of transport.
func (o *Options) destLimit(transport string) int {
	n := transportLimit(o.DefaultDestinationLimit, o.DestinationLimit, transport)
	if n <= 0 {
		n = o.Concurrency // 0 = no limit of its own (Postfix)
	}
	if t := o.TransportDefs[transport]; t != nil && t.MaxProc > 0 && t.MaxProc < n {
		n = t.MaxProc // no more sessions than deliveries the transport may run
	}
	return n
}

// rcptLimit is the most recipients per transaction for transport.
func (o *Options) rcptLimit(transport string) int {
	n := transportLimit(o.DefaultRecipientLimit, o.RecipientLimit, transport)
	if n <= 0 {
		return math.MaxInt // 0 = no limit (Postfix)
	}
	return n
}

// transportLimit is transport's own value of a limit (lookup, when set:
// $transport_destination_concurrency_limit and the like), else def.
func transportLimit(def int, lookup func(string) int, transport string) int {
	if lookup != nil {
		return lookup(transport)
	}
	return def
}

// backoff is the delay before the next attempt of a recipient that has
// now failed attempts times (attempts >= 1):
// min(MaxBackoff, MinBackoff * 2^(attempts-1)).
func (o *Options) backoff(attempts int) time.Duration {
	d := o.MinBackoff
	for i := 1; i < attempts && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.MaxBackoff)
}

// Clock is the scheduler's time source. Tests inject a fake one to check
// retry times exactly.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer {
	return sysTimer{time.NewTimer(d)}
}

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
