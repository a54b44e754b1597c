package config

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// kind says how a parameter's value is checked at load time.
type kind int

const (
	kindString   kind = iota // free text; only expansion is checked
	kindList                 // list of words (commas and/or white space)
	kindBool                 // yes | no
	kindInt                  // non-negative decimal
	kindSize                 // bytes
	kindTime                 // Postfix time with unit
	kindEnum                 // one of enum
	kindDomains              // domain list (Domains)
	kindNetworks             // network list (Networks)
	kindMaps                 // list of lookup tables
	kindUsers                // user list: names, !name, /file, type:table
	kindTemplate             // reply template: $names expanded when used, not at load
)

// param is one entry of the defaults table.
type param struct {
	kind kind
	def  string               // raw default
	fn   func(*Config) string // computed default, when def is not fixed
	enum []string
	// min is the smallest value accepted, Postfix's own minimum for the
	// parameter where it has one (its CONFIG_INT_TABLE and
	// CONFIG_TIME_TABLE entries): a count, bytes, or seconds for a time.
	// 0 = any value, and then 0 means 0 (no limit, no sleep, one
	// attempt: what the parameter's description says).
	min int64
}

// minimum is the smallest value of the named parameter (0 for a name
// outside the table).
func minimum(name string) int64 {
	if p, ok := params[name]; ok {
		return p.min
	}
	return 0
}

func (p *param) defaultValue(c *Config) string {
	if p.fn != nil {
		return p.fn(c)
	}
	return p.def
}

// params is the defaults table: every parameter holdfast knows, with
// Postfix's default value (mail_params.h, postconf(5)) unless the comment
// says otherwise. Time defaults carry their unit: a bare number in the file
// is read in that unit. It is filled in init because computed defaults read
// other parameters.
var params map[string]*param

func init() { params = defaults() }

func defaults() map[string]*param {
	return map[string]*param{
		// Identity and addressing.
		"mail_name":                        {kind: kindString, def: "holdfast"}, // Postfix: "Postfix"
		"myhostname":                       {kind: kindString, fn: defaultHostname},
		"mydomain":                         {kind: kindString, fn: defaultDomain},
		"myorigin":                         {kind: kindString, def: "$myhostname"},
		"mydestination":                    {kind: kindDomains, def: "$myhostname, localhost.$mydomain, localhost"},
		"mynetworks":                       {kind: kindNetworks, fn: defaultNetworks},
		"mynetworks_style":                 {kind: kindEnum, def: "host", enum: []string{"host", "subnet", "class"}},
		"relay_domains":                    {kind: kindDomains, def: ""}, // compatibility_level >= 2
		"relayhost":                        {kind: kindString, def: ""},
		"recipient_delimiter":              {kind: kindString, def: ""},
		"parent_domain_matches_subdomains": {kind: kindList, def: "debug_peer_list, fast_flush_domains, mynetworks, permit_mx_backup_networks, qmqpd_authorized_clients, relay_domains, smtpd_access_maps"},
		"debug_peer_list":                  {kind: kindDomains, def: ""},
		"permit_mx_backup_networks":        {kind: kindDomains, def: ""},
		"double_bounce_sender":             {kind: kindString, def: "double-bounce"},
		"empty_address_recipient":          {kind: kindString, def: "MAILER-DAEMON"},
		"mail_owner":                       {kind: kindString, def: "holdfast"}, // Postfix: "postfix"

		// Fast flush and ETRN (reference spec 5.1).
		"fast_flush_domains":          {kind: kindDomains, def: "$relay_domains"},
		"fast_flush_refresh_time":     {kind: kindTime, def: "12h"},
		"fast_flush_purge_time":       {kind: kindTime, def: "7d"},
		"odmr_listen":                 {kind: kindList, def: ""},   // ours: ODMR (RFC 2645) addresses, e.g. :366; empty = off
		"odmr_tls_wrappermode":        {kind: kindBool, def: "no"}, // ours: implicit TLS on odmr_listen (smtpd_tls_cert_file)
		"etrn_login_maps":             {kind: kindMaps, def: ""},   // ours: destination -> logins that may ETRN/ATRN it
		"etrn_reply_counts":           {kind: kindBool, def: "no"}, // ours: RFC 1985 251/253 replies
		"authorized_flush_users":      {kind: kindUsers, def: "static:anyone"},
		"authorized_mailq_users":      {kind: kindUsers, def: "static:anyone"},
		"authorized_submit_users":     {kind: kindUsers, def: "static:anyone"},
		"smtpd_discard_ehlo_keywords": {kind: kindList, def: ""},

		// SMTP server.
		"smtpd_listen":                          {kind: kindList, def: ":25"},         // ours: addresses to listen on
		"proxy_interfaces":                      {kind: kindList, def: ""},            // addresses of a proxy/NAT in front of us (loop detection)
		"smtpd_connection_limit":                {kind: kindInt, def: "1000", min: 1}, // ours: simultaneous SMTP sessions, all clients
		"smtpd_banner":                          {kind: kindString, def: "$myhostname ESMTP $mail_name"},
		"smtpd_helo_required":                   {kind: kindBool, def: "no"},
		"smtpd_delay_reject":                    {kind: kindBool, def: "yes"},
		"smtpd_junk_command_limit":              {kind: kindInt, def: "${stress?{1}:{100}}", min: 1},
		"smtpd_soft_error_limit":                {kind: kindInt, def: "10", min: 1},
		"smtpd_hard_error_limit":                {kind: kindInt, def: "${stress?{1}:{20}}", min: 1},
		"smtpd_error_sleep_time":                {kind: kindTime, def: "1s"},
		"smtpd_recipient_limit":                 {kind: kindInt, def: "1000", min: 1},
		"smtpd_recipient_overshoot_limit":       {kind: kindInt, def: "1000", min: 1},
		"smtpd_timeout":                         {kind: kindTime, def: "${stress?{10}:{300}}s", min: 1},
		"smtpd_client_connection_count_limit":   {kind: kindInt, def: "${stress?{10}:{50}}"}, // Postfix: 50 ($default_process_limit / 2), also under stress
		"smtpd_client_restrictions":             {kind: kindList, def: ""},
		"smtpd_helo_restrictions":               {kind: kindList, def: ""},
		"smtpd_sender_restrictions":             {kind: kindList, def: ""},
		"smtpd_relay_restrictions":              {kind: kindList, def: "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"},
		"smtpd_recipient_restrictions":          {kind: kindList, def: ""},
		"smtpd_data_restrictions":               {kind: kindList, def: ""},
		"smtpd_end_of_data_restrictions":        {kind: kindList, def: ""},
		"smtpd_restriction_classes":             {kind: kindList, def: ""},
		"smtpd_reject_unlisted_recipient":       {kind: kindBool, def: "yes"},
		"smtpd_null_access_lookup_key":          {kind: kindString, def: "<>"},
		"show_user_unknown_table_name":          {kind: kindBool, def: "yes"},
		"relay_recipient_maps":                  {kind: kindMaps, def: ""},
		"unknown_relay_recipient_reject_code":   {kind: kindInt, def: "550"},
		"multi_recipient_bounce_reject_code":    {kind: kindInt, def: "550"},
		"maps_rbl_reject_code":                  {kind: kindInt, def: "554"},
		"rbl_reply_maps":                        {kind: kindMaps, def: ""},
		"default_rbl_reply":                     {kind: kindTemplate, def: "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}"},
		"smtpd_etrn_restrictions":               {kind: kindList, def: ""},
		"smtpd_sasl_auth_enable":                {kind: kindBool, def: "no"},
		"smtpd_sasl_type":                       {kind: kindEnum, def: "cyrus", enum: []string{"cyrus", "dovecot", "passwd-file"}}, // cyrus is refused when AUTH is on
		"smtpd_sasl_path":                       {kind: kindString, def: "smtpd"},
		"smtpd_sasl_security_options":           {kind: kindList, def: "noanonymous"},
		"smtpd_sasl_tls_security_options":       {kind: kindList, def: "$smtpd_sasl_security_options"},
		"broken_sasl_auth_clients":              {kind: kindBool, def: "no"},
		"smtpd_sasl_authenticated_header":       {kind: kindBool, def: "no"},
		"smtpd_client_auth_rate_limit":          {kind: kindInt, def: "0"},
		"smtpd_forbid_unauth_pipelining":        {kind: kindBool, def: "yes"},
		"smtpd_forbid_bare_newline":             {kind: kindEnum, def: "normalize", enum: []string{"normalize", "yes", "note", "reject", "no"}}, // Postfix 3.9
		"smtpd_forbid_bare_newline_exclusions":  {kind: kindNetworks, def: "$mynetworks"},
		"smtpd_forbid_bare_newline_reject_code": {kind: kindInt, def: "550"},
		"smtpd_peername_lookup":                 {kind: kindBool, def: "yes"},
		"smtpd_enforce_tls":                     {kind: kindBool, def: "no"},
		"smtpd_tls_security_level":              {kind: kindEnum, def: "", enum: []string{"", "none", "may", "encrypt"}},
		"smtpd_tls_cert_file":                   {kind: kindString, def: ""},
		"smtpd_tls_key_file":                    {kind: kindString, def: ""},
		"smtpd_tls_auth_only":                   {kind: kindBool, def: "no"},
		"smtpd_tls_received_header":             {kind: kindBool, def: "no"},
		"smtpd_tls_loglevel":                    {kind: kindInt, def: "1"}, // Postfix: 0; 1 logs every session's TLS
		"smtpd_tls_protocols":                   {kind: kindString, def: ">=TLSv1"},
		"smtpd_tls_mandatory_protocols":         {kind: kindString, def: ">=TLSv1"},
		"smtpd_tls_ciphers":                     {kind: kindString, def: "medium"},
		"disable_vrfy_command":                  {kind: kindBool, def: "no"},
		"line_length_limit":                     {kind: kindInt, def: "2048", min: 1},
		"header_size_limit":                     {kind: kindInt, def: "102400"},
		"hopcount_limit":                        {kind: kindInt, def: "50"},
		"soft_bounce":                           {kind: kindBool, def: "no"},
		"reject_code":                           {kind: kindInt, def: "554"},
		"defer_code":                            {kind: kindInt, def: "450"},
		"access_map_reject_code":                {kind: kindInt, def: "554"},
		"access_map_defer_code":                 {kind: kindInt, def: "450"},
		"relay_domains_reject_code":             {kind: kindInt, def: "554"},
		"unknown_client_reject_code":            {kind: kindInt, def: "450"},
		"unknown_hostname_reject_code":          {kind: kindInt, def: "450"},
		"unknown_address_reject_code":           {kind: kindInt, def: "450"},
		"invalid_hostname_reject_code":          {kind: kindInt, def: "501"},
		"non_fqdn_reject_code":                  {kind: kindInt, def: "504"},
		"plaintext_reject_code":                 {kind: kindInt, def: "450"},
		"message_size_limit":                    {kind: kindSize, def: "10240000"},
		"queue_minfree":                         {kind: kindSize, def: "0"},

		// Deadlines and stress (Postfix 3.7 smtpd(8), STRESS_README). A
		// session is under stress when smtpd_stress_threshold percent of
		// smtpd_connection_limit is busy; then stress = yes.
		"stress":                     {kind: kindString, def: ""},                    // set per session; in the file it forces the mode
		"smtpd_stress_threshold":     {kind: kindInt, def: "80"},                     // ours: percent of smtpd_connection_limit
		"smtpd_per_request_deadline": {kind: kindBool, def: "yes"},                   // Postfix: ${stress?{yes}:{no}}
		"smtpd_min_data_rate":        {kind: kindInt, def: "500", min: 1},            // bytes/s during DATA and BDAT
		"smtpd_transaction_deadline": {kind: kindTime, def: "${stress?{60}:{600}}s"}, // ours: MAIL to the end of the content
		"smtpd_starttls_timeout":     {kind: kindTime, def: "${stress?{10}:{300}}s", min: 1},

		// Per-client limits (Postfix's anvil(8)) for clients outside
		// smtpd_client_event_limit_exceptions, per anvil_rate_time_unit.
		// Postfix's rate limits default to 0 (off); ours are on.
		"smtpd_client_connection_rate_limit":      {kind: kindInt, def: "${stress?{20}:{100}}"},
		"smtpd_client_message_rate_limit":         {kind: kindInt, def: "${stress?{20}:{100}}"},
		"smtpd_client_recipient_rate_limit":       {kind: kindInt, def: "${stress?{200}:{1000}}"},
		"smtpd_client_new_tls_session_rate_limit": {kind: kindInt, def: "${stress?{20}:{100}}"},
		"smtpd_client_etrn_rate_limit":            {kind: kindInt, def: "${stress?{10}:{30}}"}, // ours: Postfix has none
		"smtpd_client_event_limit_exceptions":     {kind: kindNetworks, def: "$mynetworks"},
		"smtpd_client_ipv4_prefix_length":         {kind: kindInt, def: "32"},
		"smtpd_client_ipv6_prefix_length":         {kind: kindInt, def: "84"},
		"anvil_rate_time_unit":                    {kind: kindTime, def: "60s", min: 1},

		// Queue and scheduling (reference spec 5.2).
		"queue_directory":                                     {kind: kindString, def: "/var/spool/holdfast"}, // ours: holds queue.db
		"queue_size_limit":                                    {kind: kindSize, def: "0"},                     // ours: queue.db size cap, 0 = none
		"inflight_content_limit":                              {kind: kindSize, def: "67108864"},              // ours: memory for content being received (256 KiB per message), 0 = none
		"queue_run_delay":                                     {kind: kindTime, def: "300s", min: 1},
		"minimal_backoff_time":                                {kind: kindTime, def: "300s", min: 1},
		"maximal_backoff_time":                                {kind: kindTime, def: "4000s", min: 1},
		"maximal_queue_lifetime":                              {kind: kindTime, def: "5d"},
		"bounce_queue_lifetime":                               {kind: kindTime, def: "5d"},
		"delay_warning_time":                                  {kind: kindTime, def: "0h"},
		"confirm_delay_cleared":                               {kind: kindBool, def: "no"},
		"defer_transports":                                    {kind: kindList, def: ""},
		"transport_retry_time":                                {kind: kindTime, def: "60s"},
		"qmgr_message_active_limit":                           {kind: kindInt, def: "20000", min: 1},
		"qmgr_message_recipient_limit":                        {kind: kindInt, def: "20000"},
		"qmgr_clog_warn_time":                                 {kind: kindTime, def: "300s"},
		"initial_destination_concurrency":                     {kind: kindInt, def: "5"},
		"default_destination_concurrency_limit":               {kind: kindInt, def: "20"},
		"default_destination_concurrency_failed_cohort_limit": {kind: kindInt, def: "1"},
		"default_destination_recipient_limit":                 {kind: kindInt, def: "50"},
		"smtp_destination_concurrency_limit":                  {kind: kindInt, def: "$default_destination_concurrency_limit"},
		"smtp_destination_recipient_limit":                    {kind: kindInt, def: "$default_destination_recipient_limit"},
		"relay_destination_concurrency_limit":                 {kind: kindInt, def: "$default_destination_concurrency_limit"},
		"relay_destination_recipient_limit":                   {kind: kindInt, def: "$default_destination_recipient_limit"},
		"delivery_concurrency_limit":                          {kind: kindInt, def: "100", min: 1}, // ours: parallel deliveries, all destinations
		"bounce_size_limit":                                   {kind: kindSize, def: "50000", min: 1},
		"notify_classes":                                      {kind: kindList, def: "resource, software"},
		"bounce_notice_recipient":                             {kind: kindString, def: "postmaster"},
		"2bounce_notice_recipient":                            {kind: kindString, def: "postmaster"},
		"delay_notice_recipient":                              {kind: kindString, def: "postmaster"},
		"error_notice_recipient":                              {kind: kindString, def: "postmaster"},
		"default_transport":                                   {kind: kindString, def: "smtp"},
		"relay_transport":                                     {kind: kindString, def: "relay"},
		"transport_maps":                                      {kind: kindMaps, def: ""},
		"master_cf":                                           {kind: kindString, def: ""}, // ours: a Postfix master.cf whose smtp, lmtp, error and discard services are transports

		// SMTP client.
		"smtp_helo_name":                   {kind: kindString, def: "$myhostname"},
		"smtp_host_lookup":                 {kind: kindList, def: "dns"},
		"disable_dns_lookups":              {kind: kindBool, def: "no"},
		"dns_resolver":                     {kind: kindString, def: ""}, // ours: host:port of the one DNS server asked; "" = /etc/resolv.conf
		"smtp_bind_address":                {kind: kindString, def: ""},
		"smtp_bind_address6":               {kind: kindString, def: ""},
		"smtp_tls_security_level":          {kind: kindEnum, def: "", enum: []string{"", "none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"}},
		"smtp_tls_CAfile":                  {kind: kindString, def: ""},
		"smtp_tls_CApath":                  {kind: kindString, def: ""},
		"smtp_use_tls":                     {kind: kindBool, def: "no"},  // obsolete: may, when smtp_tls_security_level is empty
		"smtp_enforce_tls":                 {kind: kindBool, def: "no"},  // obsolete: verify (encrypt without peername)
		"smtp_tls_enforce_peername":        {kind: kindBool, def: "yes"}, // obsolete: with smtp_enforce_tls
		"smtp_tls_cert_file":               {kind: kindString, def: ""},
		"smtp_tls_key_file":                {kind: kindString, def: "$smtp_tls_cert_file"},
		"smtp_tls_verify_cert_match":       {kind: kindList, def: "hostname"},
		"smtp_tls_secure_cert_match":       {kind: kindList, def: "nexthop, dot-nexthop"},
		"smtp_tls_fingerprint_cert_match":  {kind: kindList, def: ""},
		"smtp_tls_fingerprint_digest":      {kind: kindString, def: "sha256"},
		"smtp_tls_protocols":               {kind: kindString, def: ">=TLSv1"},
		"smtp_tls_mandatory_protocols":     {kind: kindString, def: ">=TLSv1"},
		"smtp_tls_ciphers":                 {kind: kindString, def: "medium"},
		"smtp_tls_mandatory_ciphers":       {kind: kindString, def: "medium"},
		"smtp_tls_policy_maps":             {kind: kindList, def: ""},
		"smtp_tls_loglevel":                {kind: kindInt, def: "1"}, // Postfix: 0; 1 logs every session's TLS
		"smtp_dns_support_level":           {kind: kindEnum, def: "", enum: []string{"", "disabled", "enabled", "dnssec"}},
		"smtp_connect_timeout":             {kind: kindTime, def: "30s"},
		"smtp_helo_timeout":                {kind: kindTime, def: "300s", min: 1},
		"smtp_starttls_timeout":            {kind: kindTime, def: "300s", min: 1},
		"smtp_mail_timeout":                {kind: kindTime, def: "300s", min: 1},
		"smtp_rcpt_timeout":                {kind: kindTime, def: "300s", min: 1},
		"smtp_data_init_timeout":           {kind: kindTime, def: "120s", min: 1},
		"smtp_data_xfer_timeout":           {kind: kindTime, def: "180s", min: 1},
		"smtp_data_done_timeout":           {kind: kindTime, def: "600s", min: 1},
		"smtp_quit_timeout":                {kind: kindTime, def: "300s", min: 1},
		"smtp_rset_timeout":                {kind: kindTime, def: "20s", min: 1},
		"smtp_delivery_deadline":           {kind: kindTime, def: "1800s"}, // ours: one mail transaction as a whole
		"smtp_connection_cache_time_limit": {kind: kindTime, def: "2s", min: 1},
		"smtp_mx_address_limit":            {kind: kindInt, def: "5"},
		"smtp_mx_session_limit":            {kind: kindInt, def: "2"},
		"smtp_skip_5xx_greeting":           {kind: kindBool, def: "yes"},
		"smtp_line_length_limit":           {kind: kindInt, def: "999"},

		// LMTP client (the lmtp transport, lmtp(8)).
		"lmtp_lhlo_name":                     {kind: kindString, def: "$myhostname"},
		"lmtp_tcp_port":                      {kind: kindInt, def: "24"},
		"lmtp_host_lookup":                   {kind: kindList, def: "dns"},
		"lmtp_tls_security_level":            {kind: kindEnum, def: "", enum: []string{"", "none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure"}},
		"lmtp_connect_timeout":               {kind: kindTime, def: "0s"},
		"lmtp_lhlo_timeout":                  {kind: kindTime, def: "300s", min: 1},
		"lmtp_starttls_timeout":              {kind: kindTime, def: "300s", min: 1},
		"lmtp_mail_timeout":                  {kind: kindTime, def: "300s", min: 1},
		"lmtp_rcpt_timeout":                  {kind: kindTime, def: "300s", min: 1},
		"lmtp_data_init_timeout":             {kind: kindTime, def: "120s", min: 1},
		"lmtp_data_xfer_timeout":             {kind: kindTime, def: "180s", min: 1},
		"lmtp_data_done_timeout":             {kind: kindTime, def: "600s", min: 1},
		"lmtp_quit_timeout":                  {kind: kindTime, def: "300s", min: 1},
		"lmtp_rset_timeout":                  {kind: kindTime, def: "20s", min: 1},
		"lmtp_delivery_deadline":             {kind: kindTime, def: "1800s"}, // ours: as smtp_delivery_deadline
		"lmtp_destination_concurrency_limit": {kind: kindInt, def: "$default_destination_concurrency_limit"},
		"lmtp_destination_recipient_limit":   {kind: kindInt, def: "$default_destination_recipient_limit"},

		// Operations (ours).
		"control_socket":   {kind: kindString, def: "$queue_directory/control.sock"},
		"metrics_listen":   {kind: kindString, def: ""}, // empty = no metrics listener
		"log_format":       {kind: kindEnum, def: "json", enum: []string{"json", "console", "postfix"}},
		"syslog_name":      {kind: kindString, def: "holdfast"}, // Postfix: postfix
		"syslog_facility":  {kind: kindEnum, def: "mail", enum: []string{"mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}},
		"maillog_file":     {kind: kindString, def: ""},
		"log_level":        {kind: kindEnum, def: "info", enum: []string{"trace", "debug", "info", "warn", "error"}},
		"shutdown_timeout": {kind: kindTime, def: "30s"}, // graceful stop: wait this long for sessions and deliveries

		// Cluster over etcd (ours); empty endpoints = a single host.
		"cluster_etcd_endpoints":     {kind: kindList, def: ""},
		"cluster_name":               {kind: kindString, def: "holdfast"},
		"cluster_node_name":          {kind: kindString, def: "$myhostname"},
		"cluster_etcd_username":      {kind: kindString, def: ""},
		"cluster_etcd_password_file": {kind: kindString, def: ""},
		"cluster_etcd_tls_ca_file":   {kind: kindString, def: ""},
		"cluster_etcd_tls_cert_file": {kind: kindString, def: ""},
		"cluster_etcd_tls_key_file":  {kind: kindString, def: ""},
		"cluster_flush_max_age":      {kind: kindTime, def: "1h"},
		"cluster_member_ttl":         {kind: kindTime, def: "10s"},
		"cluster_summary_interval":   {kind: kindTime, def: "30s"},
	}
}

// defaultHostname is Postfix's myhostname default: the system's host name,
// made fully qualified through the resolver when it is not.
func defaultHostname(*Config) string {
	hostnameOnce.Do(func() { hostname = lookupHostname() })
	return hostname
}

var (
	hostnameOnce sync.Once
	hostname     string
)

func lookupHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	if strings.Contains(h, ".") {
		return strings.ToLower(h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cname, err := net.DefaultResolver.LookupCNAME(ctx, h); err == nil {
		if n := strings.TrimSuffix(cname, "."); strings.Contains(n, ".") {
			return strings.ToLower(n)
		}
	}
	return strings.ToLower(h)
}

// defaultDomain is Postfix's mydomain default: myhostname without its first
// label, or "localdomain" for a single-label host name.
func defaultDomain(c *Config) string {
	h := c.String("myhostname")
	if _, rest, ok := strings.Cut(h, "."); ok && rest != "" {
		return rest
	}
	return "localdomain"
}
