// Package redisslot computes Redis Cluster hash slots, for the rate
// limiter's per-slot breakers and batches and for the test cluster's
// slot layout.
package redisslot

import "strings"

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Of returns the Redis Cluster hash slot of key (Redis Cluster
// specification, "Keys distribution model"): CRC16 (XMODEM) of the key's
// hash tag, the text between its first "{" and the next "}" when that is
// not empty, or of the whole key, modulo Count. Gateways put "{tenant}" in
// every key, so a tenant's keys share one slot.
func Of(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % Count
}
