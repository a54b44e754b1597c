package config

import (
	"fmt"
	"sort"
	"strings"
)

// Every parameter of the defaults table either has its effect in holdfast
// or is listed here (TestEveryParameterUsedOrListed walks the table and the
// code). docs/compatibility.md lists the same (TestCompatibilityDoc).

// compatOnly are the parameters accepted so that an operator's Postfix
// main.cf loads unchanged, but that have no effect in holdfast, with the
// reason. Setting one to anything but its default logs a warning naming
// it, unless another setting uses it in a $name expansion.
var compatOnly = map[string]string{
	"mydomain":                        "no effect of its own; available for $mydomain in other values",
	"mydestination":                   "holdfast delivers no mail locally: a domain is accepted only through relay_domains (or mynetworks)",
	"debug_peer_list":                 "per-client debug logging is not implemented; use log_level = debug",
	"permit_mx_backup_networks":       "permit_mx_backup is not implemented; list backup-MX domains in relay_domains",
	"double_bounce_sender":            "an undeliverable notice is logged and dropped, never returned to a double-bounce address",
	"empty_address_recipient":         "notices are never sent to the null sender, so there is nothing to redirect",
	"mail_owner":                      "the daemon runs as the user that starts it (the systemd unit's User=)",
	"fast_flush_refresh_time":         "the flush index is exact (updated in the delivery transaction): there is nothing to refresh",
	"fast_flush_purge_time":           "the flush index is exact (updated in the delivery transaction): there is nothing to purge",
	"header_size_limit":               "headers are kept whole; message_size_limit bounds the message",
	"queue_minfree":                   "a full disk is answered with 452 4.3.1; queue_size_limit caps the queue file",
	"confirm_delay_cleared":           "no notice is sent when a delayed message is delivered",
	"transport_retry_time":            "transports run in-process: there are no dead delivery processes to wait for",
	"qmgr_message_recipient_limit":    "the queue manager keeps no in-memory recipient list; qmgr_message_active_limit bounds the messages in delivery",
	"qmgr_clog_warn_time":             "there is no incoming/active queue split to clog",
	"initial_destination_concurrency": "no slow start: a destination gets up to its concurrency limit at once",
	"default_destination_concurrency_failed_cohort_limit": "a destination is marked dead after one failed connection (Postfix's default 1)",
	"notify_classes":           "no postmaster copies of errors are sent; errors are logged",
	"bounce_notice_recipient":  "no postmaster copies of bounces are sent (notify_classes)",
	"2bounce_notice_recipient": "an undeliverable notice is logged and dropped",
	"delay_notice_recipient":   "no postmaster copies of delay notices are sent (notify_classes)",
	"error_notice_recipient":   "no postmaster copies of errors are sent (notify_classes)",
	"smtp_mx_session_limit":    "sessions are bounded by smtp_mx_address_limit only",
	"smtp_skip_5xx_greeting":   "holdfast always skips a next hop that answers with a 5xx greeting (Postfix's default yes)",
	"smtp_line_length_limit":   "long lines are sent as received (SMTPUTF8 and 8BITMIME peers accept them; the next hop decides)",
}

// refusal is a setting holdfast refuses: ignoring it would weaken security
// or send mail elsewhere than the operator intends.
type refusal struct {
	why string
	// ok reports whether a value can be accepted (it asks for nothing
	// holdfast would ignore); nil = only an empty value.
	ok func(v string) bool
}

// refused are the settings that are start-up errors. Some are in the
// defaults table (smtpd_discard_ehlo_keywords); most are Postfix
// parameters holdfast does not know, where an "unknown parameter" warning
// would be too weak.
var refused = map[string]refusal{
	"smtpd_discard_ehlo_keywords":     {why: "discarding EHLO keywords is not implemented: every extension would still be announced"},
	"content_filter":                  {why: "content filters are not supported: mail would be relayed unfiltered"},
	"smtpd_proxy_filter":              {why: "before-queue content filters are not supported: mail would be relayed unfiltered"},
	"smtpd_milters":                   {why: "milters are not supported: mail would be relayed unfiltered"},
	"non_smtpd_milters":               {why: "milters are not supported: mail would be relayed unfiltered"},
	"header_checks":                   {why: "header_checks are not supported: their REJECT and DISCARD actions would not apply"},
	"mime_header_checks":              {why: "mime_header_checks are not supported: their actions would not apply"},
	"nested_header_checks":            {why: "nested_header_checks are not supported: their actions would not apply"},
	"body_checks":                     {why: "body_checks are not supported: their actions would not apply"},
	"virtual_alias_maps":              {why: "address rewriting is not supported: mail would go to the unrewritten address"},
	"virtual_alias_domains":           {why: "virtual alias domains are not supported: list relayed domains in relay_domains"},
	"virtual_mailbox_domains":         {why: "holdfast delivers no mail locally: list relayed domains in relay_domains"},
	"canonical_maps":                  {why: "address rewriting is not supported: addresses would stay unrewritten"},
	"sender_canonical_maps":           {why: "address rewriting is not supported: addresses would stay unrewritten"},
	"recipient_canonical_maps":        {why: "address rewriting is not supported: addresses would stay unrewritten"},
	"relocated_maps":                  {why: "relocated_maps are not supported: mail for moved users would be relayed"},
	"smtp_generic_maps":               {why: "address rewriting is not supported: addresses would leave unrewritten"},
	"inet_interfaces":                 {why: "the SMTP server listens on smtpd_listen (addresses and ports); set that instead", ok: func(v string) bool { return v == "" || strings.EqualFold(v, "all") }},
	"sender_dependent_relayhost_maps": {why: "sender-dependent routing is not supported: mail would go through relayhost"},
	"smtpd_sender_login_maps":         {why: "sender login maps are not supported (reject_sender_login_mismatch is an unknown restriction)"},
	"smtp_sasl_auth_enable":           {why: "SMTP client authentication is not supported", ok: func(v string) bool { return v == "" || strings.EqualFold(v, "no") }},
	"smtp_tls_wrappermode":            {why: "TLS wrapper mode (port 465) is not supported: the client would talk plaintext", ok: func(v string) bool { return v == "" || strings.EqualFold(v, "no") }},
	"smtpd_tls_wrappermode":           {why: "TLS wrapper mode (port 465) is not supported: the server would talk plaintext", ok: func(v string) bool { return v == "" || strings.EqualFold(v, "no") }},
	"enable_idna2003_compatibility":   {why: "only IDNA2008 (UTS 46 non-transitional) conversion is supported: names with ß or ς would map to other destinations than with transitional processing", ok: func(v string) bool { return v == "" || strings.EqualFold(v, "no") }},
}

// compatWarnings are the warnings for compatibility-only parameters set
// in the file, in line order.
func (c *Config) compatWarnings() []string {
	usedBy := map[string]bool{}
	for _, s := range c.set {
		for _, ref := range references(s.value) {
			usedBy[ref] = true
		}
	}
	var names []string
	for name, s := range c.set {
		if _, ok := compatOnly[name]; !ok || usedBy[name] {
			continue
		}
		if def, ok := c.DefaultValue(name); ok && def == s.value {
			continue // the behaviour asked for is holdfast's
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return c.set[names[i]].line < c.set[names[j]].line })
	var out []string
	for _, name := range names {
		s := c.set[name]
		out = append(out, fmt.Sprintf("%s:%d: %s: accepted for compatibility, no effect in holdfast: %s", s.file, s.line, name, compatOnly[name]))
	}
	return out
}

// checkRefused returns an *Error for the first refused setting, in line
// order.
func (c *Config) checkRefused() error {
	var bad []string
	for name, s := range c.set {
		r, ok := refused[name]
		if !ok {
			continue
		}
		v := strings.TrimSpace(s.value)
		if r.ok == nil && v == "" || r.ok != nil && r.ok(v) {
			continue
		}
		bad = append(bad, name)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool { return c.set[bad[i]].line < c.set[bad[j]].line })
	return c.errorf(bad[0], "not supported by holdfast: %s", refused[bad[0]].why)
}

// CompatOnly reports whether name is accepted for compatibility only, and
// why it has no effect.
func CompatOnly(name string) (why string, ok bool) {
	why, ok = compatOnly[name]
	return why, ok
}
