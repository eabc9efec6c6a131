package redisanalyticsexporter

import (
	"errors"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/consumer/consumererror"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// classifyRedisError marks the errors that would recur for the same batch as
// permanent, so exporterhelper drops the batch instead of retrying it:
// the script's own abort (WRONGTYPE or overflow on a counter key, or a pending
// key of the wrong type; nothing of the batch was written) and authentication
// or ACL refusals. Everything else (connection refused or reset, timeouts,
// pool timeouts, LOADING, BUSY, READONLY, OOM, too few replicas within
// wait_timeout…) is returned as is and retried; the batch id makes the retry
// safe.
func classifyRedisError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, protocol.ErrUnexpectedReply) {
		return consumererror.NewPermanent(err)
	}
	if _, ok := errors.AsType[redis.Error](err); !ok {
		return err
	}
	for _, prefix := range []string{protocol.AbortPrefix, "NOAUTH", "WRONGPASS", "NOPERM"} {
		if redis.HasErrorPrefix(err, prefix) {
			return consumererror.NewPermanent(err)
		}
	}
	return err
}
