package auth

import "time"

// SetVerifierClock makes v read the time from now.
func SetVerifierClock(v *Verifier, now func() time.Time) { v.now = now }

// SetIssuerClock makes i read the time from now.
func SetIssuerClock(i *Issuer, now func() time.Time) { i.now = now }
