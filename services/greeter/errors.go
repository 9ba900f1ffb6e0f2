package greeter

import (
	"fmt"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the greeter's errors.
const Domain = "greeter.switchboard.dev"

var errTooManyNames = status.InvalidArgument(Domain, "TOO_MANY_NAMES",
	fmt.Sprintf("at most %d names per call", MaxNamesPerRun),
	status.FieldViolation("name", fmt.Sprintf("at most %d names per call", MaxNamesPerRun)))
