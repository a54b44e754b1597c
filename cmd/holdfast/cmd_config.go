package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/holdfast-mta/holdfast/config"
)

// defaultConfigPath is the configuration file every subcommand reads
// unless -c names another.
const defaultConfigPath = "/etc/holdfast/holdfast.cf"

func init() {
	register("config", "show configuration parameters (postconf)", runConfig)
}

// loadConfig reads the configuration file, prints its warnings on stderr
// and returns the configuration, or nil and EX_CONFIG after printing the
// error.
func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	c, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return nil, exConfig
	}
	for _, w := range c.Warnings() {
		fmt.Fprintf(stderr, "holdfast: warning: %s\n", w)
	}
	return c, 0
}

// runConfig is `holdfast config [-c FILE] [-n|-d] [-x] [NAME...]`, after
// postconf(1): without NAME it prints every parameter as `name = value`,
// sorted; -n only those set in the file, -d the defaults, -x expanded
// values. Flags and names may be mixed.
func runConfig(args []string, stdout, stderr io.Writer) int {
	fs, file := commandFlags("holdfast config", stderr)
	onlySet := fs.Bool("n", false, "show only parameters set in the file")
	defaults := fs.Bool("d", false, "show default values")
	expand := fs.Bool("x", false, "expand $name in values")
	man := fs.Bool("man", false, "print the manual page holdfast.cf(5), made from the parameter table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: holdfast config [-c FILE] [-n|-d] [-x] [NAME...] | --man")
		fs.PrintDefaults()
	}
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return exUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		names = append(names, args[0])
		args = args[1:]
	}
	if *man {
		writeConfigMan(stdout)
		return 0
	}
	if *onlySet && *defaults {
		fmt.Fprintln(stderr, "holdfast config: -n and -d cannot be combined")
		return exUsage
	}
	var c *config.Config
	if *defaults {
		c = config.Default()
	} else {
		var code int
		if c, code = loadConfig(*file, stderr); c == nil {
			return code
		}
	}
	return printParams(c, names, *onlySet, *defaults, *expand, stdout, stderr)
}

// printParams writes the chosen parameters as `name = value`.
func printParams(c *config.Config, names []string, onlySet, defaults, expand bool, stdout, stderr io.Writer) int {
	if len(names) == 0 {
		names = c.Names()
		if onlySet {
			names = c.Explicit()
		}
	}
	status := 0
	for _, name := range names {
		var value string
		var ok bool
		switch {
		case defaults:
			value, ok = c.DefaultValue(name)
		case onlySet && !c.IsSet(name):
			ok = config.Known(name)
			if ok {
				continue // postconf -n NAME prints nothing for a default
			}
		default:
			value, ok = c.Raw(name)
		}
		if !ok {
			fmt.Fprintf(stderr, "holdfast config: %s: unknown parameter\n", name)
			status = 1
			continue
		}
		if expand {
			x, err := expandValue(c, name, value, defaults)
			if err != nil {
				fmt.Fprintf(stderr, "holdfast config: %v\n", err)
				status = 1
				continue
			}
			value = x
		}
		fmt.Fprintf(stdout, "%s = %s\n", name, value)
	}
	return status
}

// expandValue expands value, the raw value or default of name. A default
// is expanded against the defaults only.
func expandValue(c *config.Config, name, value string, defaults bool) (string, error) {
	if defaults {
		d := config.Default()
		d.Set(name, value)
		return d.Expand(name)
	}
	return c.Expand(name)
}

// overrideFlag collects `-o name=value` arguments: parameters set on the
// command line over the file's, as Postfix's daemons take them from
// master.cf. `make run PORT=N` uses it for smtpd_listen.
type overrideFlag []string

func (o *overrideFlag) String() string { return strings.Join(*o, " ") }

func (o *overrideFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	*o = append(*o, v)
	return nil
}

// apply sets the overrides on c and validates the result; a non-zero
// return is the exit status after the error was printed.
func (o overrideFlag) apply(c *config.Config, stderr io.Writer) int {
	if len(o) == 0 {
		return 0
	}
	for _, kv := range o {
		name, value, _ := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !config.Known(name) {
			fmt.Fprintf(stderr, "holdfast: -o %s: unknown parameter\n", name)
			return exConfig
		}
		c.Set(name, strings.TrimSpace(value))
		if why, ok := config.CompatOnly(name); ok {
			fmt.Fprintf(stderr, "holdfast: warning: -o %s: accepted for compatibility, no effect in holdfast: %s\n", name, why)
		}
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintf(stderr, "holdfast: -o: %v\n", err)
		return exConfig
	}
	return 0
}
