package smtpd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// A restriction list (smtpd_*_restrictions, a restriction class) is
// parsed once, at New, into rules; an unknown name is a start-up error.
// Evaluation follows Postfix's smtpd_check.c (generic_checks): the first
// rule that permits or rejects ends the list; warn_if_reject,
// defer_if_permit and defer_if_reject change what a later rejection or
// the end of the stage does (restrict_stage.go).

// verdict is the outcome of one restriction.
type verdict int

const (
	dunno  verdict = iota // no decision: the next restriction
	permit                // OK: the list ends, the stage passes
	reject                // the list ends with the reply
)

// argKind says what follows a restriction name in the list.
type argKind int

const (
	argNone   argKind = iota
	argTable          // type:table
	argDomain         // a DNS list domain, with an optional =filter
	argNumber         // seconds (sleep)
)

// restriction is one row of the restriction table.
type restriction struct {
	arg argKind
	fn  func(*check, *rule) (verdict, *smtp.SMTPError)
}

// rule is one parsed restriction with its argument.
type rule struct {
	name   string
	do     restriction
	table  Table      // argTable
	domain string     // argDomain: the list's domain, without the filter
	filter *replyMask // argDomain: "=127.0.0.2" etc., nil = any reply
	secs   int        // argNumber
}

type ruleList []rule

// restrictions maps names to their implementation; filled in init
// because the functions refer to the table (restriction classes).
var restrictions map[string]restriction

func init() {
	restrictions = map[string]restriction{}
	for _, m := range []map[string]restriction{genericRestrictions(), clientRestrictions(), heloRestrictions(), addressRestrictions(), dnsRestrictions()} {
		for k, v := range m {
			restrictions[k] = v
		}
	}
}

// genericRestrictions are those that do not look at the client or the
// envelope.
func genericRestrictions() map[string]restriction {
	return map[string]restriction{
		"permit": {fn: func(*check, *rule) (verdict, *smtp.SMTPError) { return permit, nil }},
		"reject": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return reject, c.rejected(c.codes().Reject, ec(5, 7, 1), "Access denied")
		}},
		"defer": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			return reject, c.rejected(c.codes().Defer, ec(4, 3, 2), "Try again later")
		}},
		"defer_if_permit": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			c.deferIfPermit(c.rejected(450, ec(4, 7, 0), "defer_if_permit requested"))
			return dunno, nil
		}},
		"defer_if_reject": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			c.deferIfReject(c.rejected(450, ec(4, 7, 0), "defer_if_reject requested"))
			return dunno, nil
		}},
		// warn_if_reject is handled by the list loop.
		"warn_if_reject":           {fn: func(*check, *rule) (verdict, *smtp.SMTPError) { return dunno, nil }},
		"sleep":                    {arg: argNumber, fn: sleepRule},
		"reject_unauth_pipelining": {fn: rejectUnauthPipelining},
		"reject_plaintext_session": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			if c.s.tls {
				return dunno, nil
			}
			return c.decide(rep(c.codes().Plaintext, ec(4, 7, 1), "Session encryption is required"))
		}},
		"reject_multi_recipient_bounce": {fn: rejectMultiRecipientBounce},
		"permit_sasl_authenticated": {fn: func(c *check, _ *rule) (verdict, *smtp.SMTPError) {
			if c.s != nil && c.s.authenticated() {
				return permit, nil
			}
			return dunno, nil
		}},
	}
}

// parseRules parses one restriction list. classes are the names of
// smtpd_restriction_classes, usable as restrictions.
func parseRules(param string, items []string, open func(string) (Table, error), classes map[string]bool) (ruleList, error) {
	var l ruleList
	for i := 0; i < len(items); i++ {
		name := strings.ToLower(strings.TrimSpace(items[i]))
		if name == "" {
			continue
		}
		r := rule{name: name}
		do, ok := restrictions[name]
		switch {
		case ok:
			r.do = do
		case classes[name]:
			r.do = restriction{fn: classRule}
		default:
			return nil, fmt.Errorf("%s: unknown restriction %q", param, items[i])
		}
		if do.arg != argNone {
			if i+1 >= len(items) {
				return nil, fmt.Errorf("%s: %s needs an argument", param, name)
			}
			i++
			if err := r.parseArg(items[i], open); err != nil {
				return nil, fmt.Errorf("%s: %s %s: %w", param, name, items[i], err)
			}
		}
		l = append(l, r)
	}
	return l, nil
}

// parseArg reads the argument of a restriction.
func (r *rule) parseArg(arg string, open func(string) (Table, error)) error {
	switch r.do.arg {
	case argTable:
		if open == nil {
			return fmt.Errorf("no table opener configured")
		}
		t, err := open(arg)
		if err != nil {
			return err
		}
		r.table = t
	case argNumber:
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of seconds")
		}
		r.secs = n
	case argDomain:
		d, f, hasFilter := strings.Cut(arg, "=")
		if d == "" {
			return fmt.Errorf("want a DNS list domain")
		}
		r.domain = strings.ToLower(strings.TrimSuffix(d, "."))
		if hasFilter {
			m, err := parseReplyMask(f)
			if err != nil {
				return err
			}
			r.filter = m
		}
	}
	return nil
}

// parseValueRules parses the right-hand side of an access table entry
// as a restriction list (a class name, or restrictions without tables,
// as Postfix allows).
func parseValueRules(value string, classes map[string]bool) (ruleList, error) {
	items := strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	return parseRules("access table", items, func(string) (Table, error) {
		return nil, fmt.Errorf("lookup tables are not allowed in access table results; use a restriction class")
	}, classes)
}

// classRule evaluates a restriction class by name.
func classRule(c *check, r *rule) (verdict, *smtp.SMTPError) {
	return c.run(c.cfg.classes[r.name])
}
