package auth

import "testing"

// Vectors from glibc's crypt(3) (and Drepper's spec for "Hello world!").
func TestSHACrypt(t *testing.T) {
	for _, v := range []struct{ pw, want string }{
		{"secret", "$6$saltstring$AIsRs/Ee56G/tC8MEHhvReZTfx8u3rXXMl6eYrjCG9ibix19DxoMBLogdTET5Ukw9Sf7eZTITsuk0Ry5qulYz."},
		{"Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
		{"", "$6$rounds=1000$ab$ibFMAI/Igw53aVaJxJu4wwQmU0jF8lxiKV6mtjRJmbxKnzQU8fIizULiJeSfGn7H54dbRhqwIBpklchs8nlWi."},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "$5$rounds=1200$0123456789abcdef$Dx2t.iYJ.h1l19D90J57wn98Otui2lT9n1qE4OJmSl1"},
		{"pässwörd", "$6$x$CcOozKa6JVx4D2D8MkLiJrFeNI7WXH.mpgK166.0Klw7xGHTCeLuyZxq45XcTgw97w7RIg7n9epLe.7jp3kKM/"},
		// doveadm pw -s SHA512-CRYPT -p secret
		{"secret", "$6$sMRWOY7Gp127IM2l$OFZUd5Z47MicgHsoqsJhzVM4qODLPabi.gwZhxuejvkCYp0x.d73DSyG8olosq0YovajwLgzFxHDDF7Tc/jYf/"},
	} {
		if !shaCryptVerify(v.pw, v.want) {
			got, _ := shaCrypt(v.pw, v.want)
			t.Errorf("shaCrypt(%q) = %s, want %s", v.pw, got, v.want)
		}
		if shaCryptVerify(v.pw+"x", v.want) {
			t.Errorf("wrong password %q+x verified", v.pw)
		}
	}
	for _, bad := range []string{"$6$rounds=x$ab$", "$1$ab$cd", "", "$6$rounds=1000"} {
		if shaCryptVerify("", bad) {
			t.Errorf("malformed %q verified", bad)
		}
	}
}
