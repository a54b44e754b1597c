package odmr

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/holdfast-mta/holdfast/auth"
	"github.com/holdfast-mta/holdfast/config"
	"github.com/holdfast-mta/holdfast/internal/tlscert"
)

// The provider's own limits, which have no parameter.
const (
	maxConnections = 100 // sessions at once, as Postfix's default_process_limit
	maxDomains     = 100 // domains in one ATRN
	leaseBatch     = 100 // messages leased at a time
)

// DefaultOptions are the options of the defaults table (config/params.go)
// that ODMR shares with smtpd, read by scalarsFromConfig from an empty
// configuration, with the provider's own limits; no listener, SASL
// back-end or owners. Tests start from them.
func DefaultOptions() Options {
	return config.FromDefaults("odmr", func(c *config.Config) (Options, error) {
		var o Options
		err := scalarsFromConfig(c, &o)
		return o, err
	})
}

// scalarsFromConfig reads myhostname, smtpd_timeout, line_length_limit,
// smtpd_client_auth_rate_limit and anvil_rate_time_unit, and sets the
// provider's own limits.
func scalarsFromConfig(c *config.Config, o *Options) error {
	var err error
	o.Hostname = c.String("myhostname")
	o.MaxConnections, o.MaxDomains, o.Batch = maxConnections, maxDomains, leaseBatch
	if o.AuthRateLimit, err = c.Int("smtpd_client_auth_rate_limit"); err != nil {
		return err
	}
	if err = config.Read(c.Time, map[string]*time.Duration{"anvil_rate_time_unit": &o.RateTimeUnit, "smtpd_timeout": &o.Timeout}); err != nil {
		return err
	}
	o.LineLengthLimit, err = c.Int("line_length_limit")
	return err
}

// OptionsFromConfig reads odmr_listen and odmr_tls_wrappermode and the
// smtpd parameters ODMR shares: the SASL back-end (smtpd_sasl_type,
// smtpd_sasl_path; ODMR needs one whatever smtpd_sasl_auth_enable says,
// since it serves authenticated customers only), the security options,
// etrn_login_maps, smtpd_timeout, line_length_limit and, for the
// wrapper mode, smtpd_tls_cert_file/key_file. An empty odmr_listen
// gives empty Options (no server).
func OptionsFromConfig(c *config.Config) (Options, error) {
	var o Options
	var err error
	if o.Listen, err = c.List("odmr_listen"); err != nil || len(o.Listen) == 0 {
		return Options{}, err
	}
	if err := scalarsFromConfig(c, &o); err != nil {
		return Options{}, err
	}
	if o.Backend, err = auth.Open(c.String("smtpd_sasl_type"), c.String("smtpd_sasl_path"), c.String("queue_directory"), o.Hostname); err != nil {
		return Options{}, fmt.Errorf("odmr_listen: %w", err)
	}
	for name, dst := range map[string]*auth.Security{"smtpd_sasl_security_options": &o.Security, "smtpd_sasl_tls_security_options": &o.TLSSecurity} {
		words, err := c.List(name)
		if err != nil {
			return Options{}, err
		}
		if *dst, err = auth.ParseSecurity(words); err != nil {
			return Options{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	owners, err := c.Table("etrn_login_maps")
	if err != nil {
		return Options{}, err
	}
	if owners == nil {
		return Options{}, fmt.Errorf("odmr_listen: etrn_login_maps is empty, so no login owns a domain")
	}
	o.Owners = auth.NewOwners(owners)
	wrap, err := c.Bool("odmr_tls_wrappermode")
	if err != nil || !wrap {
		return o, err
	}
	cert, key := c.String("smtpd_tls_cert_file"), c.String("smtpd_tls_key_file")
	if cert == "" {
		return Options{}, fmt.Errorf("odmr_tls_wrappermode: smtpd_tls_cert_file is not set")
	}
	if key == "" {
		key = cert
	}
	h, err := tlscert.Load(cert, key) // a changed file is picked up at the next handshake
	if err != nil {
		return Options{}, fmt.Errorf("odmr_tls_wrappermode: %w", err)
	}
	o.WrapperTLS = &tls.Config{GetCertificate: h.GetCertificate, MinVersion: tls.VersionTLS12}
	return o, nil
}
