package config

// descriptions says what each parameter does here, one or two sentences
// for holdfast.cf(5) (`holdfast config --man`). Postfix's parameters mean
// what postconf(5) says; the text notes where holdfast differs. Every
// parameter of the defaults table has one (TestEveryParameterDescribed).
// For a parameter accepted only for compatibility the text is Postfix's
// meaning, and the manual page says that it has no effect here.
var descriptions = map[string]string{
	// Identity and addressing.
	"mail_name":                        "The mail system name in the SMTP greeting and the Received: header.",
	"myhostname":                       "This host's fully qualified name: the greeting, EHLO to next hops, Received: and the loop check. Default: the system's host name.",
	"mydomain":                         "This host's domain: $myhostname without its first label.",
	"myorigin":                         "The domain that locally submitted mail without a domain appears to come from.",
	"mydestination":                    "Domains this host is the final destination for. holdfast delivers no mail locally: mail for these domains is refused unless a transport routes it elsewhere.",
	"mynetworks":                       "Trusted client networks (CIDR, [IPv6]/len, /file, type:table): permit_mynetworks, relay for any destination, exemption from per-client limits. Default: by mynetworks_style.",
	"mynetworks_style":                 "How mynetworks is computed when it is not set: host (this host's addresses), subnet or class.",
	"relay_domains":                    "Destinations this host accepts mail for and relays: the ISP's customer domains. Domain names, /file, type:table; a domain also matches its sub-domains per parent_domain_matches_subdomains.",
	"recipient_delimiter":              "Separator between a local part and its extension (user+ext) when looking up recipients in tables.",
	"parent_domain_matches_subdomains": "Parameters whose domain lists match a domain's sub-domains too (Postfix's compatibility behaviour).",
	"permit_mx_backup_networks":        "With permit_mx_backup, the networks the primary MX of a backed-up domain must be in.",
	"empty_address_recipient":          "Where mail to the null address would go; used for double bounces.",
	"double_bounce_sender":             "Sender of postmaster notices about undeliverable bounces.",

	// Operator interface.
	"authorized_flush_users":  "Users who may flush the queue (holdfast flush, postqueue -f/-s, sendmail -q).",
	"authorized_mailq_users":  "Users who may list the queue (mailq, postqueue -p, holdfast queue list/shape/stats).",
	"authorized_submit_users": "Users who may submit mail with sendmail.",
	"control_socket":          "holdfast: the Unix socket the command-line tools use to talk to the daemon.",
	"mail_owner":              "The user that owns the queue; with root, the only one that may change it through the control socket.",
	"metrics_listen":          "holdfast: address for the Prometheus /metrics endpoint; empty turns it off.",
	"log_format":              "holdfast: json (one JSON object per event), console (human-readable lines) or postfix (Postfix's maillog lines, to syslog or maillog_file, for pflogsumm, fail2ban and grep habits).",
	"syslog_name":             "With log_format = postfix, the name in front of each program (holdfast/smtpd[pid]). Postfix's default is postfix; fail2ban's postfix filter expects that name unless its _daemon is set.",
	"syslog_facility":         "With log_format = postfix, the syslog facility of the lines.",
	"maillog_file":            "With log_format = postfix, a file to append the lines to instead of syslog (/dev/stdout allowed), reopened when logrotate moves it.",
	"log_level":               "holdfast: the least severe level logged: trace, debug, info, warn or error.",
	"debug_peer_list":         "Clients and next hops whose sessions are logged at debug level.",
	"shutdown_timeout":        "holdfast: how long a graceful stop waits for sessions and deliveries before it cuts them; mail not yet acknowledged is never lost.",

	// Queue.
	"queue_directory":              "Directory of the queue database queue.db (and the spool of messages being received).",
	"queue_minfree":                "Free space the queue's file system must keep; below it new mail is refused with 452 4.3.1.",
	"queue_size_limit":             "holdfast: cap on the size of queue.db in bytes (k, m, g allowed); 0 means none. Over it new mail gets 452 4.3.1.",
	"inflight_content_limit":       "holdfast: memory for message content being received, in bytes; each message being received holds 256 KiB of it while its content goes to queue.db in chunks. When it is used up DATA/BDAT wait up to 5 s, then get 452 4.3.1. 0 means none.",
	"queue_run_delay":              "Postfix's interval between deferred-queue scans; holdfast retries at exact times, and uses this only as the longest a due message waits when the clock jumps.",
	"maximal_queue_lifetime":       "How long a message may stay in the queue before it is returned to the sender.",
	"bounce_queue_lifetime":        "How long a bounce may stay in the queue before it is given up.",
	"minimal_backoff_time":         "The first retry interval; each failed attempt doubles it.",
	"maximal_backoff_time":         "The longest retry interval.",
	"delay_warning_time":           "When to send the sender a delay notice for mail still queued; 0 turns the notice off.",
	"confirm_delay_cleared":        "Tell the sender when mail that got a delay notice was delivered after all.",
	"qmgr_message_active_limit":    "Messages in delivery at one time.",
	"qmgr_message_recipient_limit": "Recipients of active messages held in memory at one time.",
	"qmgr_clog_warn_time":          "Minimal interval between warnings that the active queue is congested.",
	"soft_bounce":                  "Turn every permanent delivery failure into a temporary one (for testing a change without losing mail).",
	"bounce_size_limit":            "The largest part of an original message returned in a bounce.",
	"bounce_notice_recipient":      "Who gets postmaster copies of bounces (notify_classes bounce).",
	"2bounce_notice_recipient":     "Who gets undeliverable bounces (notify_classes 2bounce).",
	"delay_notice_recipient":       "Who gets postmaster copies of delay notices (notify_classes delay).",
	"error_notice_recipient":       "Who gets reports of SMTP protocol and policy errors (notify_classes protocol, policy).",
	"notify_classes":               "Which problems are reported to the postmaster: bounce, 2bounce, delay, policy, protocol, resource, software.",
	"hopcount_limit":               "The most Received: headers a message may carry, ours included: one that reaches it is refused at the end of DATA with 554 5.4.0 Error: too many hops (a mail loop), as Postfix's cleanup does.",
	"header_size_limit":            "The most bytes of one header (with its continuation lines) kept as a header.",
	"line_length_limit":            "The longest line kept in one piece; longer lines are broken.",
	"message_size_limit":           "The largest message accepted (bytes, announced in EHLO SIZE); 0 means no limit.",

	// Fast flush (ETRN).
	"fast_flush_domains":      "Destinations whose mail is indexed for ETRN and flush DOMAIN. holdfast's index is exact and kept in the queue database.",
	"fast_flush_refresh_time": "Postfix refreshes idle flush logs after this time; holdfast's index needs no refresh and only checks the value.",
	"fast_flush_purge_time":   "Postfix removes empty flush logs after this time; holdfast's index has no empty logs and only checks the value.",
	"odmr_listen":             "holdfast: addresses of the On-Demand Mail Relay service (RFC 2645 ATRN, port 366); empty turns it off. Needs smtpd_sasl_type/smtpd_sasl_path and etrn_login_maps.",
	"odmr_tls_wrappermode":    "holdfast: on odmr_listen, start every connection with TLS (smtpd_tls_cert_file), since fetchmail's ODMR mode cannot STARTTLS.",
	"etrn_login_maps":         "holdfast: tables mapping a destination to the SASL logins that own it; when set, an authenticated client may ETRN or ATRN only its own destinations, and nobody else may ETRN a listed one.",
	"etrn_reply_counts":       "holdfast: yes gives RFC 1985's 251/253 ETRN replies with the number of messages started; no gives Postfix's 250.",
	"defer_transports":        "Transports whose mail is not delivered on its own, only when flushed (ETRN, holdfast flush): the ETRN-only customers.",

	// Delivery.
	"default_transport":                     "The transport for destinations that are not relay_domains and have no transport_maps entry.",
	"relay_transport":                       "The transport for relay_domains without a transport_maps entry.",
	"relayhost":                             "The next hop for mail that has no transport_maps entry (empty: the destination's MX).",
	"transport_maps":                        "Tables that map a recipient or domain to transport:nexthop (transport(5) search order).",
	"transport_retry_time":                  "How long a transport that cannot be run is left alone before it is tried again.",
	"delivery_concurrency_limit":            "holdfast: parallel deliveries, all destinations together.",
	"default_destination_concurrency_limit": "Parallel deliveries to one destination.",
	"default_destination_concurrency_failed_cohort_limit": "Failed connections in a row after which a destination is taken as dead and its mail deferred.",
	"default_destination_recipient_limit":                 "Recipients per delivery to one destination.",
	"initial_destination_concurrency":                     "Parallel deliveries to a destination before the first succeeds.",
	"relay_destination_concurrency_limit":                 "Parallel deliveries to one destination through the relay transport.",
	"relay_destination_recipient_limit":                   "Recipients per delivery through the relay transport.",
	"smtp_destination_concurrency_limit":                  "Parallel deliveries to one destination through the smtp transport.",
	"smtp_destination_recipient_limit":                    "Recipients per delivery through the smtp transport.",
	"disable_dns_lookups":                                 "Do not look up MX or address records; next hops must be given as [address].",
	"dns_resolver":                                        "holdfast: host:port of the one DNS server used for every lookup (MX, A/AAAA, PTR, DNSBL, TXT). Empty: the servers of /etc/resolv.conf.",
	"smtp_bind_address":                                   "Local IPv4 address of outgoing SMTP connections.",
	"smtp_bind_address6":                                  "Local IPv6 address of outgoing SMTP connections.",
	"smtp_delivery_deadline":                              "holdfast: time limit for one delivery to a next hop as a whole, whatever each step's limit; over it the delivery is deferred.",
	"smtp_connect_timeout":                                "Time limit for connecting to a next hop.",
	"smtp_helo_timeout":                                   "Time limit for the next hop's greeting and its reply to EHLO/HELO.",
	"smtp_mail_timeout":                                   "Time limit for the reply to MAIL FROM.",
	"smtp_rcpt_timeout":                                   "Time limit for the reply to each RCPT TO.",
	"smtp_data_init_timeout":                              "Time limit for the reply to DATA.",
	"smtp_data_xfer_timeout":                              "Time limit for sending the message content (per write).",
	"smtp_data_done_timeout":                              "Time limit for the reply after the final dot.",
	"smtp_rset_timeout":                                   "Time limit for the reply to RSET on a cached connection.",
	"smtp_quit_timeout":                                   "Time limit for the reply to QUIT.",
	"smtp_starttls_timeout":                               "Time limit for the STARTTLS handshake with a next hop.",
	"smtp_connection_cache_time_limit":                    "How long an idle connection to a next hop is kept for the next message.",
	"smtp_helo_name":                                      "The name sent in EHLO/HELO to next hops.",
	"smtp_host_lookup":                                    "How next-hop names are resolved: dns, native or both.",
	"smtp_line_length_limit":                              "The longest line sent to a next hop; longer lines are folded.",
	"smtp_mx_address_limit":                               "The most next-hop addresses tried for one delivery.",
	"smtp_mx_session_limit":                               "The most sessions tried for one delivery.",
	"smtp_skip_5xx_greeting":                              "Try the next MX host when one greets with 5xx, instead of bouncing.",
	"smtp_tls_security_level":                             "TLS to next hops: none, may (when offered), encrypt (required), fingerprint, verify, secure, dane or dane-only (RFC 7672).",
	"smtp_tls_CAfile":                                     "Certificates of the authorities trusted for next hops' certificates at verify and secure (empty with smtp_tls_CApath: the system's roots).",
	"smtp_use_tls":                                        "Obsolete form of smtp_tls_security_level = may (used when that is empty).",
	"smtp_enforce_tls":                                    "Obsolete form of smtp_tls_security_level = verify (encrypt with smtp_tls_enforce_peername = no), used when that is empty.",
	"smtp_tls_enforce_peername":                           "Obsolete: with smtp_enforce_tls = yes, verify (yes, default) or encrypt (no).",
	"smtp_tls_CApath":                                     "A directory of PEM files of trusted authorities, added to smtp_tls_CAfile.",
	"smtp_tls_cert_file":                                  "The client certificate (PEM) offered to next hops that ask for one.",
	"smtp_tls_key_file":                                   "The private key of smtp_tls_cert_file.",
	"smtp_tls_verify_cert_match":                          "Names a next hop's certificate must match at verify: hostname, nexthop, dot-nexthop or names.",
	"smtp_tls_secure_cert_match":                          "Names a next hop's certificate must match at secure: nexthop, dot-nexthop (default), hostname or names.",
	"smtp_tls_fingerprint_cert_match":                     "Certificate or public-key digests accepted at the fingerprint level.",
	"smtp_tls_fingerprint_digest":                         "Digest of smtp_tls_fingerprint_cert_match: sha256 (default), sha512, sha1 or md5.",
	"smtp_tls_protocols":                                  "TLS versions at level may (\">=TLSv1.2\", \"!TLSv1, !TLSv1.1\").",
	"smtp_tls_mandatory_protocols":                        "TLS versions at encrypt and stronger levels.",
	"smtp_tls_ciphers":                                    "Cipher grade at level may; Go's suites are all of grade high, so export, low, medium and high are all met.",
	"smtp_tls_mandatory_ciphers":                          "Cipher grade at encrypt and stronger levels (as smtp_tls_ciphers).",
	"smtp_tls_policy_maps":                                "Per-destination TLS policy: level and match=, protocols=, ciphers= by next hop, then parent domains (.example.com).",
	"smtp_tls_loglevel":                                   "0: TLS failures only; 1: also a TLS connection established line per session. holdfast: 1 by default (Postfix: 0).",
	"smtp_dns_support_level":                              "dnssec: trust DNSSEC answers (AD bit) of dns_resolver, needed by the dane levels.",

	// LMTP transport: the smtp_* settings' counterparts.
	"master_cf":                          "holdfast: a Postfix master.cf whose smtp and lmtp services (with their -o options and maxproc), error, retry and discard services become transports; its other delivery services (local, virtual, pipe) are transports whose mail is deferred; empty: only the built-in transports.",
	"lmtp_tcp_port":                      "The port of an LMTP next hop given without one.",
	"lmtp_delivery_deadline":             "holdfast: time limit for one LMTP delivery as a whole.",
	"lmtp_connect_timeout":               "Time limit for connecting to an LMTP server.",
	"lmtp_lhlo_timeout":                  "Time limit for the LMTP server's greeting and its reply to LHLO.",
	"lmtp_lhlo_name":                     "The name sent in LHLO.",
	"lmtp_mail_timeout":                  "Time limit for the reply to MAIL FROM over LMTP.",
	"lmtp_rcpt_timeout":                  "Time limit for the reply to each RCPT TO over LMTP.",
	"lmtp_data_init_timeout":             "Time limit for the reply to DATA over LMTP.",
	"lmtp_data_xfer_timeout":             "Time limit for sending the content over LMTP (per write).",
	"lmtp_data_done_timeout":             "Time limit for the per-recipient replies after the final dot (RFC 2033).",
	"lmtp_rset_timeout":                  "Time limit for the reply to RSET over LMTP.",
	"lmtp_quit_timeout":                  "Time limit for the reply to QUIT over LMTP.",
	"lmtp_starttls_timeout":              "Time limit for the STARTTLS handshake with an LMTP server.",
	"lmtp_host_lookup":                   "How LMTP next-hop names are resolved: dns, native or both.",
	"lmtp_tls_security_level":            "TLS to LMTP servers, with the smtp_tls_* settings: none, may, encrypt, fingerprint, verify or secure.",
	"lmtp_destination_concurrency_limit": "Parallel deliveries to one LMTP destination.",
	"lmtp_destination_recipient_limit":   "Recipients per delivery to one LMTP destination.",

	// Deadlines, stress and per-client limits (README: Limits and deadlines).
	"stress":                                  "Set per session to yes while smtpd_stress_threshold percent of the connection slots are busy, so that ${stress?{x}:{y}} values give x. In the file it forces the mode: yes always, empty never (Postfix: -o stress= in master.cf).",
	"smtpd_stress_threshold":                  "holdfast: percent of smtpd_connection_limit busy (counting the new session) from which the server is under stress, until fewer than a tenth below that are busy; 0 = never. Postfix's master sets stress when every process is busy.",
	"smtpd_per_request_deadline":              "smtpd_timeout limits the time to receive a whole request (a command, or DATA/BDAT content) and send its reply, counting only time spent waiting in reads and writes, not each read. holdfast's default is yes (Postfix: ${stress?{yes}:{no}}).",
	"smtpd_min_data_rate":                     "With smtpd_per_request_deadline, bytes/s of DATA or BDAT content that keep the deadline from running out: every n bytes add n/rate seconds, up to smtpd_timeout.",
	"smtpd_transaction_deadline":              "holdfast: time limit from an accepted MAIL FROM to the end of the message content; 0 = none. Replies are not cut by it.",
	"smtpd_client_event_limit_exceptions":     "Clients exempt from the per-client count and rate limits (networks, as mynetworks).",
	"smtpd_client_connection_rate_limit":      "Connections one client may make per anvil_rate_time_unit; over it 421 4.7.0. holdfast: on by default (Postfix: 0, off).",
	"smtpd_client_message_rate_limit":         "MAIL FROM commands one client may send per anvil_rate_time_unit; over it 450 4.7.1. holdfast: on by default (Postfix: 0, off).",
	"smtpd_client_recipient_rate_limit":       "RCPT TO commands one client may send per anvil_rate_time_unit; over it 450 4.7.1. holdfast: on by default (Postfix: 0, off).",
	"smtpd_client_new_tls_session_rate_limit": "New (not resumed) TLS sessions one client may start per anvil_rate_time_unit; over it STARTTLS gets 454 4.7.0. holdfast: on by default (Postfix: 0, off).",
	"smtpd_client_etrn_rate_limit":            "holdfast: ETRN commands one client may send per anvil_rate_time_unit; over it 458. Postfix has no ETRN rate limit.",
	"smtpd_client_ipv4_prefix_length":         "IPv4 addresses in one such prefix count as one client for the per-client limits.",
	"smtpd_client_ipv6_prefix_length":         "IPv6 addresses in one such prefix count as one client for the per-client limits.",
	"smtpd_starttls_timeout":                  "Time limit for the TLS handshake after STARTTLS; 10 s under stress.",
	"anvil_rate_time_unit":                    "The time unit of the per-client rate limits.",

	// SMTP server.
	"proxy_interfaces":                      "Addresses (or host names) of a proxy or NAT that forwards mail to this host: a next hop at one of them is this host, a mail loop (deferred: mail for X loops back to myself).",
	"smtpd_listen":                          "holdfast: the addresses the SMTP server listens on (host:port, comma or space separated).",
	"smtpd_banner":                          "The text after 220 in the greeting.",
	"smtpd_connection_limit":                "holdfast: simultaneous SMTP sessions, all clients together; over it new connections get 421. The last tenth is kept for clients in smtpd_client_event_limit_exceptions.",
	"smtpd_client_connection_count_limit":   "Simultaneous sessions from one client (outside smtpd_client_event_limit_exceptions).",
	"smtpd_timeout":                         "Time limit for a client's request (with smtpd_per_request_deadline) or each read; ${stress?{10}:{300}}s: 10 s under stress.",
	"smtpd_error_sleep_time":                "Pause before replying to a client that has made more than smtpd_soft_error_limit errors.",
	"smtpd_soft_error_limit":                "Errors after which each reply is delayed by smtpd_error_sleep_time.",
	"smtpd_hard_error_limit":                "Errors after which the session is ended with 421.",
	"smtpd_junk_command_limit":              "NOOP, RSET, VRFY, ETRN and the like a client may send before it counts as an error.",
	"smtpd_recipient_limit":                 "Recipients accepted in one transaction; the next gets 452 4.5.3.",
	"smtpd_helo_required":                   "Require HELO or EHLO before MAIL FROM.",
	"smtpd_delay_reject":                    "Answer client, helo and sender restrictions at RCPT TO, as Postfix does by default.",
	"smtpd_client_restrictions":             "Restrictions on the client's address and name.",
	"smtpd_helo_restrictions":               "Restrictions on the HELO/EHLO name.",
	"smtpd_sender_restrictions":             "Restrictions on MAIL FROM.",
	"smtpd_relay_restrictions":              "Relay control, applied at RCPT TO before smtpd_recipient_restrictions.",
	"smtpd_recipient_restrictions":          "Restrictions on RCPT TO.",
	"smtpd_data_restrictions":               "Restrictions applied at DATA.",
	"smtpd_end_of_data_restrictions":        "Restrictions applied after the message content, before it is queued.",
	"smtpd_restriction_classes":             "Names of restriction classes: each name is a parameter holding a restriction list, usable as a restriction or an access table result.",
	"smtpd_reject_unlisted_recipient":       "Reject recipients in relay_domains not listed in relay_recipient_maps, even without reject_unlisted_recipient.",
	"smtpd_null_access_lookup_key":          "Key that check_sender_access looks up for the null sender.",
	"show_user_unknown_table_name":          "Name the table in \"User unknown in relay recipient table\" replies.",
	"relay_recipient_maps":                  "Valid recipients in relay_domains (user@domain, or @domain for all); others are rejected at RCPT. Empty: all are valid.",
	"unknown_relay_recipient_reject_code":   "Reply code for a recipient missing from relay_recipient_maps.",
	"multi_recipient_bounce_reject_code":    "Reply code of reject_multi_recipient_bounce.",
	"maps_rbl_reject_code":                  "Reply code of a DNS block list rejection ($rbl_code).",
	"rbl_reply_maps":                        "Reply templates per DNS list domain (domain=filter, then domain).",
	"default_rbl_reply":                     "Reply template of a DNS list rejection: $rbl_code, $rbl_class, $rbl_what, $rbl_domain, $rbl_reason, $client_address, $client_name, $helo_name, $sender, $recipient.",
	"smtpd_etrn_restrictions":               "Restrictions on ETRN: who may flush which destination.",
	"smtpd_discard_ehlo_keywords":           "EHLO keywords not announced (and their commands refused).",
	"smtpd_enforce_tls":                     "Obsolete form of smtpd_tls_security_level = encrypt.",
	"smtpd_forbid_unauth_pipelining":        "End the session of a client that sends commands ahead of the replies without having negotiated PIPELINING (or talks before the greeting).",
	"smtpd_forbid_bare_newline":             "Bare LF handling (Postfix 3.9): normalize or yes (only CRLF.CRLF ends DATA; a bare LF or CR is stored as CRLF), note (normalize and log), reject (refuse a command or message with a bare LF), no (a bare-LF dot line ends DATA).",
	"smtpd_forbid_bare_newline_exclusions":  "Clients that smtpd_forbid_bare_newline does not apply to.",
	"smtpd_forbid_bare_newline_reject_code": "Reply code for a message refused for a bare newline.",
	"smtpd_peername_lookup":                 "Look up the client's name (reverse DNS with forward confirmation); no uses unknown.",
	"smtpd_sasl_auth_enable":                "Offer SMTP AUTH.",
	"smtpd_tls_auth_only":                   "Offer AUTH only over TLS.",
	"smtpd_tls_received_header":             "Put the TLS protocol and cipher in the Received: header, as Postfix's (using TLSv1.3 with cipher ...) comment.",
	"smtpd_tls_loglevel":                    "0: no TLS line; 1: an \"Anonymous TLS connection established from ...\" line per session. holdfast: 1 by default (Postfix: 0).",
	"smtpd_tls_protocols":                   "TLS versions offered with STARTTLS at level may (\">=TLSv1.2\", \"!TLSv1, !TLSv1.1\").",
	"smtpd_tls_mandatory_protocols":         "TLS versions at level encrypt.",
	"smtpd_tls_ciphers":                     "Cipher grade; Go's suites are all of grade high, so export, low, medium and high are all met.",
	"smtpd_tls_security_level":              "STARTTLS for clients: none, may (offered) or encrypt (required before MAIL).",
	"smtpd_tls_cert_file":                   "The server's certificate chain (PEM).",
	"smtpd_tls_key_file":                    "The server's private key (PEM).",
	"smtpd_sasl_type":                       "The credential back-end of SMTP AUTH: dovecot (Dovecot's auth socket) or passwd-file (a Dovecot passwd-file read by holdfast).",
	"smtpd_sasl_path":                       "The Dovecot auth socket (smtpd_sasl_type = dovecot; a relative path is under $queue_directory, as Postfix's private/auth) or the passwd-file (passwd-file). Also used by odmr_listen.",
	"smtpd_sasl_security_options":           "SASL mechanism properties refused without TLS: noplaintext, noanonymous, ...",
	"smtpd_sasl_tls_security_options":       "SASL mechanism properties refused over TLS.",
	"broken_sasl_auth_clients":              "Also announce AUTH in the obsolete AUTH=mechanisms form that some old clients (Outlook Express 4, Exchange 5.0) look for.",
	"smtpd_sasl_authenticated_header":       "Put the authenticated login in the Received: header.",
	"smtpd_client_auth_rate_limit":          "AUTH commands one client may send per anvil_rate_time_unit (as Postfix: this bounds password guessing); 0 means no limit.",
	"disable_vrfy_command":                  "Refuse VRFY.",

	// Reply codes.
	"access_map_defer_code":        "Reply code of a DEFER result in an access table.",
	"access_map_reject_code":       "Reply code of a REJECT result in an access table.",
	"defer_code":                   "Reply code of defer and defer_if_permit/defer_if_reject.",
	"reject_code":                  "Reply code of the reject restriction.",
	"invalid_hostname_reject_code": "Reply code of reject_invalid_helo_hostname.",
	"non_fqdn_reject_code":         "Reply code of the reject_non_fqdn_* restrictions.",
	"plaintext_reject_code":        "Reply code when TLS is required and the client has not started it.",
	"relay_domains_reject_code":    "Reply code of relay access denied.",
	"unknown_address_reject_code":  "Reply code of reject_unknown_sender_domain and reject_unknown_recipient_domain.",
	"unknown_client_reject_code":   "Reply code of reject_unknown_client_hostname.",
	"unknown_hostname_reject_code": "Reply code of reject_unknown_helo_hostname.",
}

// Description returns what a parameter does, for holdfast.cf(5).
func Description(name string) string { return descriptions[name] }

// ManEntry is what holdfast.cf(5) says of one parameter: its default as
// written in the table (Computed when it depends on the host, such as
// myhostname) and its description.
type ManEntry struct {
	Name, Default, Description string
	Computed                   bool
}

// ManEntries returns every parameter of the defaults table, sorted by
// name.
func ManEntries() []ManEntry {
	out := make([]ManEntry, 0, len(params))
	for _, name := range Default().Names() {
		p := params[name]
		desc := descriptions[name]
		if why, ok := compatOnly[name]; ok {
			desc += " Accepted for compatibility; no effect in holdfast: " + why + "."
		}
		out = append(out, ManEntry{Name: name, Default: p.def, Computed: p.fn != nil,
			Description: desc})
	}
	return out
}
