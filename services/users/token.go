package main

import (
	"time"

	"microlab/services/shop"
)

// The token contract and the signer live in services/shop (shop.Signer): the monolith
// issues the same tokens, and one definition is what keeps the two verifiable by the
// same gateway.
const (
	Issuer   = shop.TokenIssuer
	Audience = shop.TokenAudience
)

// JWK is one public key of the JWKS.
type JWK = shop.JWK

// Claims are the JWT claims users issues.
type Claims = shop.Claims

// Signer issues users' tokens (shop.Signer for a User).
type Signer struct{ *shop.Signer }

// NewSigner derives the key from seedHex (see shop.NewSigner).
func NewSigner(seedHex string, ttl time.Duration) (*Signer, error) {
	s, err := shop.NewSigner(seedHex, ttl)
	if err != nil {
		return nil, err
	}
	return &Signer{s}, nil
}

// Sign issues a token for u valid from now for the configured TTL.
func (s *Signer) Sign(u User, now time.Time) (string, time.Time, error) {
	return s.Signer.Sign(u.ID, u.Email, u.Name, now)
}
