// Package status builds and reads gRPC errors that follow the google.rpc
// error model: every error it builds carries exactly one
// google.rpc.ErrorInfo (a stable UPPER_SNAKE_CASE reason and a domain),
// placed first, plus the detail its code calls for: BadRequest for
// INVALID_ARGUMENT, ResourceInfo for NOT_FOUND and ALREADY_EXISTS,
// PreconditionFailure for FAILED_PRECONDITION and RetryInfo for
// RESOURCE_EXHAUSTED and UNAVAILABLE.
//
// It wraps google.golang.org/grpc/status and returns its types, so the
// errors work with every gRPC client and with status.FromError, and
// importers that also need grpc's package alias one of the two.
//
// Domain code returns sentinel or typed errors; a service maps them once,
// at the edge of its gRPC layer, with a [Table]:
//
//	var statusTable = &status.Table{
//		Domain: "inventory.switchboard.dev",
//		Logger: logger,
//		Rules: []status.Rule{
//			{Is: inventory.ErrNotFound, Code: codes.NotFound, Reason: "ITEM_NOT_FOUND"},
//			{Is: inventory.ErrOutOfStock, Code: codes.FailedPrecondition, Reason: "OUT_OF_STOCK"},
//		},
//	}
//
//	func (s *server) GetItem(ctx context.Context, req *pb.GetItemRequest) (*pb.GetItemResponse, error) {
//		item, err := s.store.Item(ctx, req.GetId())
//		if err != nil {
//			return nil, statusTable.Map(ctx, err)
//		}
//		...
//	}
//
// Errors no rule matches become INTERNAL with the generic message
// "internal error" and are logged once; their text never reaches the
// caller. Handlers that know the answer directly use the constructors:
//
//	return nil, status.InvalidArgument(domain, "INVALID_QUANTITY", "quantity must be positive",
//		status.FieldViolation("quantity", "must be greater than 0"))
//
// Clients read the details back with [Info], [Reason], [BadRequest],
// [PreconditionFailure], [ResourceInfo], [RetryDelay] and [Details]; they
// accept errors wrapped with fmt.Errorf("...: %w", err) and return zero
// values for errors that carry no status.
//
// Everything in the package is safe for concurrent use.
package status
