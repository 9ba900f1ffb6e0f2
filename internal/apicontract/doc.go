// Package apicontract holds tests that pin the public API: the fully
// qualified service and method names, their streaming kinds, the event types
// and the gateway's HTTP rules. Tools and tests outside the code call these
// names, so a change to one must be deliberate and fail here first.
package apicontract
