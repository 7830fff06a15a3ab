package ratelimit

import "strings"

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Slot is the Redis Cluster hash slot of key (Redis Cluster specification,
// "Keys distribution model"): CRC16 (XMODEM) of the key's hash tag, the
// text between its first "{" and the next "}" when that is not empty, or
// of the whole key, modulo 16384. Gateways put "{tenant}" in every key, so
// a tenant's keys share one slot.
func Slot(key string) uint16 {
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
	return crc % clusterSlots
}
