package shop

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the registration fields.
const (
	maxEmail    = 254 // the longest address SMTP can carry (RFC 5321 path limit)
	maxName     = 100 // characters, after trimming
	minPassword = 8   // bytes
	maxPassword = 72  // bytes: bcrypt ignores (x/crypto rejects) anything longer
)

// FieldError is a validation failure of one input field.
type FieldError struct {
	Field, Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// NormalizeEmail is the one spelling of an address that is stored and looked up.
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Validate checks a registration and returns it normalised (email lower-cased, name
// trimmed), or a *FieldError. The password is never altered: what the user typed is
// what they must type.
func (a Account) Validate() (Account, error) {
	a.Email, a.Name = NormalizeEmail(a.Email), strings.TrimSpace(a.Name)
	switch {
	case a.Email == "":
		return a, &FieldError{"email", "is required"}
	case len(a.Email) > maxEmail:
		return a, &FieldError{"email", fmt.Sprintf("must be at most %d characters", maxEmail)}
	}
	// ParseAddress also accepts `Name <addr>`; requiring the parsed address to be the
	// whole input keeps only the bare form.
	if p, err := mail.ParseAddress(a.Email); err != nil || p.Address != a.Email {
		return a, &FieldError{"email", "must be a valid email address"}
	}
	switch n := utf8.RuneCountInString(a.Name); {
	case n == 0:
		return a, &FieldError{"name", "is required"}
	case n > maxName:
		return a, &FieldError{"name", fmt.Sprintf("must be at most %d characters", maxName)}
	case !utf8.ValidString(a.Name) || strings.ContainsFunc(a.Name, unicode.IsControl):
		return a, &FieldError{"name", "must be printable text"}
	}
	switch n := len(a.Password); {
	case n == 0:
		return a, &FieldError{"password", "is required"}
	case n < minPassword || n > maxPassword:
		return a, &FieldError{"password", fmt.Sprintf("must be %d to %d bytes long", minPassword, maxPassword)}
	}
	return a, nil
}
