package system

import (
	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

// demoCatalog is what up puts in an empty inventory on first start, so the
// shop has something to sell. Seeding only creates missing items: stock a
// run sold is not put back.
func demoCatalog() []*inventoryv1.RecordItemsRequest {
	item := func(id, name, desc string, cents, qty int64) *inventoryv1.RecordItemsRequest {
		return &inventoryv1.RecordItemsRequest{
			ItemId: id, Name: name, Description: desc,
			Price:    &typev1.Money{AmountMinor: cents, CurrencyCode: "USD"},
			Quantity: qty,
		}
	}
	return []*inventoryv1.RecordItemsRequest{
		item("sku-mug", "Switchboard mug", "350 ml stoneware mug with the switchboard logo.", 1200, 100),
		item("sku-tee", "Operator t-shirt", "Organic cotton, says 'all lines busy'.", 2500, 50),
		item("sku-cable", "Patch cable", "Two metres of braided patch cable.", 800, 500),
		item("sku-headset", "Operator headset", "Lightweight headset with a boom microphone.", 8900, 20),
		item("sku-sticker", "Sticker pack", "Twelve vinyl stickers.", 400, 1000),
		item("sku-book", "Production gRPC", "A field guide to running gRPC services.", 3900, 30),
	}
}
