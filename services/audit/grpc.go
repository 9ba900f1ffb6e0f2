package audit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
)

// Paging of Query.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxPageBytes bounds the payload JSON of one Query page: a page ends
	// early, with a next_page_token, rather than exceed it (it always
	// holds at least one record).
	MaxPageBytes = 2 << 20
)

// handlers is the gRPC edge of the service: it converts messages and maps
// every error once, with the service's status table. Requests arrive
// validated by Rules.
type handlers struct {
	auditv1.UnimplementedAuditServiceServer
	svc *Service
}

var _ auditv1.AuditServiceServer = (*handlers)(nil)

// Query lists the records matching a filter, in sequence order, a page at
// a time.
func (h *handlers) Query(ctx context.Context, req *auditv1.QueryRequest) (*auditv1.QueryResponse, error) {
	f := Filter{EventType: req.GetEventType(), Subject: req.GetSubject()}
	if req.GetStartTime() != nil {
		f.Start = req.GetStartTime().AsTime()
	}
	if req.GetEndTime() != nil {
		f.End = req.GetEndTime().AsTime()
	}
	var after int64
	if t := req.GetPageToken(); t != "" {
		var err error
		if after, err = decodePageToken(t, f); err != nil {
			return nil, h.svc.table.Map(ctx, err)
		}
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	recs, err := h.svc.store.Query(ctx, f, after, size+1)
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	resp := &auditv1.QueryResponse{}
	pageBytes := 0
	for i := range recs {
		if i == size {
			break
		}
		pr := recordToProto(&recs[i])
		if pageBytes += len(pr.GetPayloadJson()); i > 0 && pageBytes > MaxPageBytes {
			break
		}
		resp.Records = append(resp.Records, pr)
	}
	if n := len(resp.GetRecords()); n < len(recs) {
		resp.NextPageToken = encodePageToken(resp.GetRecords()[n-1].GetSequence(), f)
	}
	return resp, nil
}

// Tail streams the records after after_sequence, then each new one.
func (h *handlers) Tail(req *auditv1.TailRequest, stream auditv1.AuditService_TailServer) error {
	ctx := stream.Context()
	err := h.svc.tail(ctx, req.GetAfterSequence(), req.GetEventTypes(), func(r *Record) error {
		return stream.Send(&auditv1.TailResponse{Record: recordToProto(r)})
	})
	if err != nil && ctx.Err() != nil {
		// The client left (a failed Send says so less clearly).
		err = ctx.Err()
	}
	return h.svc.table.Map(ctx, err)
}

// Verify recomputes the chain over a range and reports the first bad
// record.
func (h *handlers) Verify(ctx context.Context, req *auditv1.VerifyRequest) (*auditv1.VerifyResponse, error) {
	v, err := h.svc.verify(ctx, req.GetFromSequence(), req.GetToSequence())
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	return &auditv1.VerifyResponse{
		Ok:               v.OK,
		RecordsChecked:   v.Checked,
		FirstBadSequence: v.FirstBad,
		Reason:           v.Reason,
		HeadHash:         v.HeadHash,
	}, nil
}

// recordToProto converts a record, rendering its event payload as JSON.
func recordToProto(r *Record) *auditv1.Record {
	pr := &auditv1.Record{
		Sequence:    r.Seq,
		EventId:     r.EventID,
		EventType:   r.EventType,
		Source:      r.Source,
		Subject:     r.Subject,
		RecordTime:  timestamppb.New(r.RecordTime),
		PayloadJson: payloadJSON(r.Payload),
		PrevHash:    r.PrevHash,
		Hash:        r.Hash,
	}
	if !r.EventTime.IsZero() {
		pr.EventTime = timestamppb.New(r.EventTime)
	}
	return pr
}

// payloadJSON renders the payload of a stored envelope as protobuf JSON.
// A payload of a type this binary does not know is rendered as its type
// URL and its bytes in base64, and stored bytes that are not an envelope
// as those bytes in base64, so that every record can be read.
func payloadJSON(stored []byte) string {
	var env eventsv1.Envelope
	if err := proto.Unmarshal(stored, &env); err != nil {
		return fallbackJSON("", stored)
	}
	if env.GetPayload() == nil {
		return "null"
	}
	b, err := protojson.Marshal(env.GetPayload())
	if err != nil {
		return fallbackJSON(env.GetPayload().GetTypeUrl(), env.GetPayload().GetValue())
	}
	return string(b)
}

func fallbackJSON(typeURL string, value []byte) string {
	m := map[string]string{"value": base64.StdEncoding.EncodeToString(value)}
	if typeURL != "" {
		m["@type"] = typeURL
	}
	b, _ := json.Marshal(m) // a map of strings always marshals
	return string(b)
}

// encodePageToken makes the opaque token of a Query position: the last
// sequence number returned and a digest of the filter, so that a token
// is only accepted with the filter it was made for.
func encodePageToken(seq int64, f Filter) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10) + "." + filterDigest(f)))
}

// decodePageToken reads a token made by encodePageToken for f.
func decodePageToken(t string, f Filter) (int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return 0, ErrInvalidPageToken
	}
	seqText, digest, ok := strings.Cut(string(raw), ".")
	if !ok || digest != filterDigest(f) {
		return 0, ErrInvalidPageToken
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 1 {
		return 0, ErrInvalidPageToken
	}
	return seq, nil
}

// filterDigest is 16 hex digits of SHA-256 over the filter's fields.
func filterDigest(f Filter) string {
	h := sha256.New()
	for _, s := range []string{f.EventType, f.Subject, timeKey(f.Start), timeKey(f.End)} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func timeKey(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}
