package shop

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token contract (the gateway verifies exactly this), for tokens users issues and, in
// the monolith build, the monolith:
//
//	header: alg "EdDSA", typ "JWT", kid = hex of the first 8 bytes of sha256(public key)
//	claims: sub = user id, email, name, iss "microlab-users", aud ["microlab"], iat, exp
//
// The key id lets a verifier pick the right key from the JWKS, and notice (unknown kid)
// that the key was rotated and the set must be fetched again. It also lets the gateway
// hold users' and the monolith's keys side by side in one set (union by kid) while the
// strangler fig moves logins from one to the other.
const (
	TokenIssuer   = "microlab-users"
	TokenAudience = "microlab"
)

// Claims are the JWT claims a token carries.
type Claims struct {
	Email string `json:"email"`
	Name  string `json:"name"`
	jwt.RegisteredClaims
}

// Signer issues tokens with an Ed25519 key derived from a seed. Asymmetric on purpose:
// with HS256 every service that verifies tokens would hold the secret that mints them.
type Signer struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	kid  string
	ttl  time.Duration
}

// NewSigner derives the key from seedHex (64 hex characters = a 32-byte Ed25519 seed).
// The error never contains the seed.
func NewSigner(seedHex string, ttl time.Duration) (*Signer, error) {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("config: JWT_SEED must be 64 hexadecimal characters (a 32-byte Ed25519 seed; make one with `openssl rand -hex 32`)")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("config: JWT_TTL=%s: must be positive", ttl)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	return &Signer{priv: priv, pub: pub, kid: hex.EncodeToString(sum[:8]), ttl: ttl}, nil
}

// Kid is the key id the signer's tokens and JWKS name.
func (s *Signer) Kid() string { return s.kid }

// Sign issues a token for the user (id, email, name) valid from now for the TTL.
func (s *Signer) Sign(id, email, name string, now time.Time) (string, time.Time, error) {
	exp := now.Add(s.ttl).Truncate(time.Second) // JWT times are whole seconds
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, Claims{
		Email: email,
		Name:  name,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   id,
			Issuer:    TokenIssuer,
			Audience:  jwt.ClaimStrings{TokenAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	})
	t.Header["kid"] = s.kid
	signed, err := t.SignedString(s.priv)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// JWK is one public key in JSON Web Key form (RFC 8037: Ed25519 is an "OKP" key).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS is the public key set served at GET /internal/jwks. One key today; a rotation
// would serve the old and the new key side by side until old tokens expire.
func (s *Signer) JWKS() map[string][]JWK {
	return map[string][]JWK{"keys": {{
		Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(s.pub),
		Kid: s.kid, Alg: "EdDSA", Use: "sig",
	}}}
}
