package smtpd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/internal/printable"
)

// SMTP AUTH (RFC 4954) with Postfix's checks and replies
// (smtpd_sasl_proto.c, smtpd_sasl_glue.c). The AUTH handler starts the
// exchange; while it goes on (actExchange after a 334) the session loop
// reads each client response and hands it to authContinue (as it reads
// DATA content after actContent).

// SASLOptions configure AUTH. A nil Backend means
// smtpd_sasl_auth_enable = no: no AUTH in EHLO, AUTH answers 503.
type SASLOptions struct {
	// Backend checks credentials (smtpd_sasl_type, smtpd_sasl_path).
	Backend auth.Backend
	// TLSAuthOnly is smtpd_tls_auth_only: AUTH only after STARTTLS.
	TLSAuthOnly bool
	// Security and TLSSecurity are smtpd_sasl_security_options and
	// smtpd_sasl_tls_security_options: the mechanisms offered without
	// and with TLS.
	Security, TLSSecurity auth.Security
	// AuthenticatedHeader is smtpd_sasl_authenticated_header: the login
	// in our Received: header.
	AuthenticatedHeader bool
	// ClientAuthRateLimit is smtpd_client_auth_rate_limit: AUTH commands
	// per client and Options.RateTimeUnit (anvil_rate_time_unit); 0 = no
	// limit. Clients in smtpd_client_event_limit_exceptions are exempt.
	ClientAuthRateLimit int
	// BrokenClients is broken_sasl_auth_clients: also announce the
	// pre-RFC "AUTH=mechanisms" form.
	BrokenClients bool
}

// AuthEvents, when Options.Events also implements it, counts AUTH
// results for metrics: "success", "failure" (wrong credentials),
// "temporary" (back-end unavailable), "malformed", "aborted",
// "rate_limited".
type AuthEvents interface {
	AuthResult(result string)
}

// saslState is the session's AUTH state.
type saslState struct {
	login  string        // the authenticated login, "" before
	method string        // its mechanism
	x      auth.Exchange // an exchange in progress
	mech   string        // its mechanism
}

// authenticated is permit_sasl_authenticated's test: a successful AUTH
// with a mechanism other than ANONYMOUS (Postfix's permit_sasl_auth).
func (s *session) authenticated() bool {
	return s.sasl.login != "" && !strings.EqualFold(s.sasl.method, "ANONYMOUS")
}

// authMechs lists the mechanisms this session may use, filtered by the
// security options for its TLS state; nil when AUTH is off, or before
// TLS with smtpd_tls_auth_only.
func (s *session) authMechs() []string {
	o := &s.cfg.opts.SASL
	if o.Backend == nil || (o.TLSAuthOnly && !s.tls) {
		return nil
	}
	all, err := o.Backend.Mechanisms()
	if err != nil {
		s.log.Warn().Err(err).Msg("SASL: cannot list mechanisms")
		return nil
	}
	sec := o.Security
	if s.tls {
		sec = o.TLSSecurity
	}
	var names []string
	for _, m := range all {
		if sec.Allows(m) {
			names = append(names, m.Name)
		}
	}
	return names
}

// authNeedsTLS reports whether mech is offered with TLS only (538).
func (s *session) authNeedsTLS(mech string) bool {
	o := &s.cfg.opts.SASL
	if s.tls || o.Backend == nil {
		return false
	}
	all, err := o.Backend.Mechanisms()
	if err != nil {
		return false
	}
	for _, m := range all {
		if strings.EqualFold(m.Name, mech) {
			return o.TLSSecurity.Allows(m)
		}
	}
	return false
}

// authCmd: the checks of smtpd_sasl_auth_cmd in Postfix's order (HELO
// and the transaction are checked by the dispatcher), then the first
// step of the exchange.
func (s *session) authCmd(arg string) (*smtp.SMTPError, action) {
	mech, resp, r := s.authStart(arg)
	if r != nil {
		return r, actNext
	}
	x, err := s.cfg.opts.SASL.Backend.Start(mech, s.authInfo())
	if err != nil {
		return s.authError(mech, err), actNext
	}
	s.sasl.x, s.sasl.mech = x, mech
	return s.authStep(resp, true)
}

// authStart checks an AUTH command and returns its mechanism and
// initial response, or the reply that refuses it.
func (s *session) authStart(arg string) (mech, resp string, r *smtp.SMTPError) {
	o := &s.cfg.opts.SASL
	if o.Backend == nil {
		return "", "", replyAuthDisabled
	}
	if o.TLSAuthOnly && !s.tls {
		return "", "", replyAuthNeedTLS // RFC 4954 sec 4
	}
	if s.sasl.login != "" {
		return "", "", replyAuthAlready
	}
	args := strings.Fields(arg)
	if len(args) < 1 || len(args) > 2 {
		return "", "", replyAuthSyntax
	}
	if len(arg)+len("AUTH ") >= s.cfg.opts.LineLengthLimit-1 {
		return "", "", s.authFailed(replyAuthLineTooLong, "malformed")
	}
	if s.overRate(evAuth, o.ClientAuthRateLimit, "AUTH command") {
		return "", "", s.authFailed(replyRateLimited("too many AUTH commands", s.client.String()), "rate_limited")
	}
	mech = strings.ToUpper(args[0])
	offered := false
	for _, m := range s.authMechs() {
		offered = offered || m == mech
	}
	if !offered {
		if s.authNeedsTLS(mech) {
			return "", "", s.authFailed(replyAuthMechNeedsTLS, "failure")
		}
		return "", "", s.authFailed(replyAuthFailed("Invalid authentication mechanism"), "failure")
	}
	if len(args) == 2 {
		resp = args[1]
	}
	return mech, resp, nil
}

func (s *session) authInfo() auth.Info {
	info := auth.Info{Service: "smtp", Remote: s.client, Secured: s.tls}
	if ta, ok := s.raw.LocalAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			info.Local = a.Unmap()
		}
	}
	return info
}

// authContinue takes one client response of the exchange in progress.
// Its reply ends the AUTH command, or is the next 334 challenge
// (actExchange).
func (s *session) authContinue(line string) (*smtp.SMTPError, action) {
	switch {
	case line == "*": // RFC 4954 sec 4
		s.log.Warn().Msgf("%s: SASL %s authentication aborted", s.namaddr, s.sasl.mech)
		s.authEnd()
		return s.authFailed(replyAuthAborted, "aborted"), actNext
	case len(line) >= s.cfg.opts.LineLengthLimit-1:
		s.authEnd()
		return s.authFailed(replyAuthLineTooLong, "malformed"), actNext
	}
	return s.authStep(line, false)
}

// authStep runs one step of the exchange: a 334 challenge when it goes
// on (actExchange), else its end.
func (s *session) authStep(resp string, initial bool) (*smtp.SMTPError, action) {
	mech := s.sasl.mech
	ch, done, err := s.sasl.x.Step(resp, initial)
	if err != nil {
		s.authEnd()
		return s.authError(mech, err), actNext
	}
	if !done {
		return rep(334, none, ch), actExchange
	}
	login := printable.String(s.sasl.x.Login())
	s.authEnd()
	s.sasl.login, s.sasl.method = login, mech
	s.log = s.log.With().Str("sasl_method", mech).Str("sasl_username", login).Logger()
	s.log.Info().Str("event", "auth").Msgf("%s: SASL %s authentication succeeded", s.namaddr, mech)
	s.authResult("success")
	return replyAuthOK, actNext
}

// authError turns a back-end error into Postfix's reply.
func (s *session) authError(mech string, err error) *smtp.SMTPError {
	var f *auth.Failure
	switch {
	case errors.Is(err, auth.ErrMalformed):
		s.log.Warn().Msgf("%s: SASL %s authentication failed: malformed response", s.namaddr, mech)
		return s.authFailed(replyAuthDecode, "malformed")
	case errors.Is(err, auth.ErrNoMech):
		return s.authFailed(replyAuthFailed("Invalid authentication mechanism"), "failure")
	case errors.As(err, &f) && !f.Temp:
		s.log.Warn().Str("event", "auth_failed").Msgf("%s: SASL %s authentication failed: %s", s.namaddr, mech, f.Reason)
		return s.authFailed(replyAuthFailed(f.Reason), "failure")
	case f != nil:
		s.log.Warn().Str("event", "auth_failed").Msgf("%s: SASL %s authentication failed: %s", s.namaddr, mech, f.Reason)
		return s.authFailed(replyAuthTemp(f.Reason), "temporary")
	}
	s.log.Error().Err(err).Msgf("%s: SASL %s authentication failed", s.namaddr, mech)
	return s.authFailed(replyAuthTemp("Authentication backend error"), "temporary")
}

func (s *session) authFailed(r *smtp.SMTPError, result string) *smtp.SMTPError {
	s.authResult(result)
	return r
}

func (s *session) authResult(result string) {
	if ev, ok := s.cfg.opts.Events.(AuthEvents); ok {
		ev.AuthResult(result)
	}
}

// authEnd closes the exchange in progress, if any.
func (s *session) authEnd() {
	if s.sasl.x != nil {
		s.sasl.x.Close()
		s.sasl.x = nil
	}
}

// saslFromConfig reads smtpd_sasl_auth_enable and the parameters it
// brings in, and opens the back-end: smtpd_sasl_type dovecot (the
// auth-client socket at smtpd_sasl_path) or passwd-file (the file at
// smtpd_sasl_path). Postfix's default type, cyrus, is not supported.
func saslFromConfig(c *config.Config, o *Options) error {
	var err error
	so := &o.SASL
	if err = config.Read(c.Bool, map[string]*bool{
		"smtpd_tls_auth_only": &so.TLSAuthOnly, "smtpd_sasl_authenticated_header": &so.AuthenticatedHeader,
		"broken_sasl_auth_clients": &so.BrokenClients,
	}); err != nil {
		return err
	}
	if so.ClientAuthRateLimit, err = c.Int("smtpd_client_auth_rate_limit"); err != nil {
		return err
	}
	for name, dst := range map[string]*auth.Security{"smtpd_sasl_security_options": &so.Security, "smtpd_sasl_tls_security_options": &so.TLSSecurity} {
		words, err := c.List(name)
		if err != nil {
			return err
		}
		if *dst, err = auth.ParseSecurity(words); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	owners, err := c.Table("etrn_login_maps")
	if err != nil {
		return err
	}
	if owners != nil {
		o.ETRNOwners = auth.NewOwners(owners)
	}
	enable, err := c.Bool("smtpd_sasl_auth_enable")
	if err != nil || !enable {
		return err
	}
	so.Backend, err = auth.Open(c.String("smtpd_sasl_type"), c.String("smtpd_sasl_path"), c.String("queue_directory"), c.String("myhostname"))
	return err
}

// redactAuth hides the credentials of an AUTH command line in the debug
// log (STYLE §19); responses during the exchange are never logged.
func redactAuth(line string) string {
	verb, arg, _ := strings.Cut(line, " ")
	if !strings.EqualFold(verb, "AUTH") {
		return line
	}
	if mech, _, ok := strings.Cut(strings.TrimSpace(arg), " "); ok {
		return verb + " " + mech + " <redacted>"
	}
	return line
}

// etrnOwner applies etrn_login_maps to an ETRN for site. owner is true
// when the authenticated login owns site (smtpd_etrn_restrictions are
// then skipped). A client that has authenticated may ETRN only what it
// owns; nobody may ETRN a listed destination it does not own. Unlisted
// destinations of unauthenticated clients are left to
// smtpd_etrn_restrictions.
func (s *session) etrnOwner(site string) (owner bool, r *smtp.SMTPError) {
	o := s.cfg.opts.ETRNOwners
	if o == nil {
		return false, nil
	}
	login := ""
	if s.authenticated() {
		login = s.sasl.login
	}
	owned, listed, err := o.Owns(login, site)
	if err != nil {
		s.log.Warn().Err(err).Msg("etrn_login_maps lookup failed")
		return false, replyLookupFailure(site)
	}
	why := ""
	switch {
	case owned:
		return true, nil
	case listed && login == "":
		why = "Authentication required for this destination"
	case listed, login != "":
		why = "Destination not owned by " + login
	default:
		return false, nil
	}
	s.log.Warn().Str("event", "etrn").Str("site", site).
		Msgf("reject: ETRN %.100s from %s: %s", site, s.namaddr, why)
	return false, replyRejected(554, ec(5, 7, 1), site, "Etrn command", why)
}

// mailAuthParam takes MAIL FROM's AUTH= parameter (RFC 4954 sec 5) when
// AUTH is on, as Postfix's smtpd_sasl_mail_opt: refused when given twice,
// otherwise accepted. holdfast never relays it, so the identity it names
// is only logged, never trusted.
func (s *session) mailAuthParam(tx *transaction, val string) *smtp.SMTPError {
	if tx.authSeen {
		return replyAuthParamTwice
	}
	tx.authSeen = true
	if v, ok := decodeXtext(val); ok && v != "<>" && s.authenticated() {
		s.log.Info().Str("sasl_sender", printable.String(v)).Msg("MAIL AUTH= parameter")
	}
	return nil
}
