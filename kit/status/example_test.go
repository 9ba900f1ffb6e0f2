package status_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

func ExampleNew() {
	st := status.New(codes.FailedPrecondition, "inventory.switchboard.dev", "OUT_OF_STOCK", "not enough stock",
		&errdetails.ErrorInfo{Metadata: map[string]string{"itemId": "42"}},
		&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
			status.PreconditionViolation("STOCK", "item/42", "3 requested, 1 available"),
		}})
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Println("ErrorInfo:", d.GetDomain(), d.GetReason(), d.GetMetadata()["itemId"])
		case *errdetails.PreconditionFailure:
			fmt.Println("PreconditionFailure:", d.GetViolations()[0].GetSubject())
		}
	}
	fmt.Println(st.Code(), st.Message())
	// Output:
	// ErrorInfo: inventory.switchboard.dev OUT_OF_STOCK 42
	// PreconditionFailure: item/42
	// FailedPrecondition not enough stock
}

func ExampleError() {
	err := status.Error(codes.PermissionDenied, "order.switchboard.dev", "NOT_ORDER_OWNER", "order belongs to another user")

	// A client reads the details back, also through wrapping.
	wrapped := fmt.Errorf("cancel order: %w", err)
	fmt.Println(grpcstatus.Code(wrapped))
	fmt.Println(status.Reason(wrapped), status.Info(wrapped).GetDomain())
	// Output:
	// PermissionDenied
	// NOT_ORDER_OWNER order.switchboard.dev
}

func ExampleNotFound() {
	err := status.NotFound("inventory.switchboard.dev", "ITEM_NOT_FOUND", "item", "sku-1")
	fmt.Println(err)
	fmt.Println(status.ResourceInfo(err).GetResourceName())
	// Output:
	// rpc error: code = NotFound desc = item "sku-1" not found
	// sku-1
}

// OutOfStockError is a typed domain error that a Rule matches with As.
type OutOfStockError struct {
	ItemID          string
	Requested, Have int
}

func (e *OutOfStockError) Error() string {
	return fmt.Sprintf("item %s: %d requested, %d in stock", e.ItemID, e.Requested, e.Have)
}

func ExampleTable_Map() {
	errItemNotFound := errors.New("item not found")

	// Log without timestamps so that the output is stable.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))

	table := &status.Table{
		Domain: "inventory.switchboard.dev",
		Logger: logger,
		Rules: []status.Rule{
			{Is: errItemNotFound, Code: codes.NotFound, Reason: "ITEM_NOT_FOUND"},
			{
				As: func(err error) bool {
					var e *OutOfStockError
					return errors.As(err, &e)
				},
				Code:   codes.FailedPrecondition,
				Reason: "OUT_OF_STOCK",
				Details: func(err error) []proto.Message {
					var e *OutOfStockError
					errors.As(err, &e)
					return []proto.Message{&errdetails.PreconditionFailure{
						Violations: []*errdetails.PreconditionFailure_Violation{
							status.PreconditionViolation("STOCK", "item/"+e.ItemID, "not enough stock"),
						},
					}}
				},
			},
		},
	}
	ctx := context.Background()

	for _, err := range []error{
		fmt.Errorf("get item: %w", errItemNotFound),
		fmt.Errorf("reserve: %w", &OutOfStockError{ItemID: "42", Requested: 3, Have: 1}),
		fmt.Errorf("reserve: %w", context.DeadlineExceeded),
		errors.New("dial tcp 10.0.0.7:5432: connection refused"),
	} {
		mapped := table.Map(ctx, err)
		fmt.Println(grpcstatus.Code(mapped), status.Reason(mapped), grpcstatus.Convert(mapped).Message())
	}
	// Output:
	// NotFound ITEM_NOT_FOUND not found
	// FailedPrecondition OUT_OF_STOCK failed precondition
	// DeadlineExceeded DEADLINE_EXCEEDED deadline exceeded
	// level=ERROR msg="unmapped error" error="dial tcp 10.0.0.7:5432: connection refused"
	// Internal INTERNAL internal error
}
