package auth

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzPasswdFile: no passwd-file content makes the parser panic, and a
// file that parses answers PLAIN without panicking.
func FuzzPasswdFile(f *testing.F) {
	for _, s := range []string{
		"alice:{PLAIN}secret\n", "# c\n\nbob:{SHA512-CRYPT}$6$ab$cd:1:2::/h:/s:extra\n",
		"x:{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56\n",
		"y:$6$rounds=1000$x$\n", "z:{BLF-CRYPT}$2y$05$\n", "{PLAIN}:x\n", "a:{", "a:}{\r\n",
	} {
		f.Add(s, "alice", "secret")
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file, user, pass string) {
		path := filepath.Join(dir, "p")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		entries, _, err := readPasswd(path)
		if err != nil {
			return
		}
		p := &PasswdFile{entries: entries}
		p.verify(user, pass)
		p.cramCheck(user, []byte("<1.2@h>"), []byte(pass))
	})
}

// FuzzExchange: any client responses through the local mechanisms end
// in a result or an error, never a panic or a login for a wrong secret.
func FuzzExchange(f *testing.F) {
	f.Add("PLAIN", "AGFsaWNlAHNlY3JldA==", "", true)
	f.Add("LOGIN", "", "YWxpY2U=", false)
	f.Add("CRAM-MD5", "", "YWxpY2UgMDAwMA==", false)
	f.Add("PLAIN", "=", "!!", true)
	verify := func(login, password string) bool { return login == "alice" && password == "secret" }
	f.Fuzz(func(t *testing.T, mech, first, second string, initial bool) {
		var x Exchange
		switch mech {
		case "PLAIN":
			x = newPlain(verify)
		case "LOGIN":
			x = &loginExchange{verify: verify}
		default:
			x = newCRAM("h", time.Time{}, func(string, []byte, []byte) bool { return false })
		}
		for i, resp := range []string{first, second, second, second, second, second} {
			_, done, err := x.Step(resp, i == 0 && initial)
			if err != nil {
				return
			}
			if done {
				if x.Login() != "alice" {
					t.Fatalf("%s: logged in as %q", mech, x.Login())
				}
				return
			}
		}
	})
}
