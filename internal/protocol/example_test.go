package protocol_test

import (
	"fmt"
	"time"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

func ExampleSchema_Key() {
	schema, err := protocol.New(protocol.DefaultPrefix)
	if err != nil {
		panic(err)
	}
	at := protocol.HourOf(time.Date(2025, 6, 1, 9, 15, 0, 0, time.UTC))
	fmt.Println(schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "page_view", Hour: at - at%24}))
	fmt.Println(schema.Key(protocol.Counter{Family: protocol.Hourly, EventType: "page_view", Hour: at}))
	fmt.Println(schema.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "page_view", UserID: "team:42", Hour: at - at%24}))

	c, err := schema.Parse("analytics:user:team%3A42:page_view:2025-06-01")
	fmt.Println(c.UserID, c.EventType, c.Start().Format(time.DateOnly), err)
	// Output:
	// analytics:counter:page_view:2025-06-01
	// analytics:counter:page_view:2025-06-01:09
	// analytics:user:team%3A42:page_view:2025-06-01
	// team:42 page_view 2025-06-01 <nil>
}
