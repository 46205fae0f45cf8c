/* CRC-32C (Castagnoli), the checksum framing every spool record. */
#ifndef HG_CORE_CRC32C_H
#define HG_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend `crc` (start with 0) over n bytes. Uses SSE4.2 when the CPU has it. */
uint32_t hg_crc32c(uint32_t crc, const void *data, size_t n);

#endif
