/**
 * @file gw_flash.c
 * @brief spool_bdev_t over esp_partition: NOR flash semantics (erase to 0xFF, writes clear bits) are what
 *        components/spool expects, so this is a direct mapping.
 */
#include "gw_flash.h"

#include "esp_partition.h"
#include "spi_flash_mmap.h"

#define SPOOL_PARTITION_TYPE ((esp_partition_type_t)0x40)
#define SPOOL_PARTITION_SUBTYPE ((esp_partition_subtype_t)0x00)

static int part_read(void *ctx, uint32_t addr, void *dst, size_t len)
{
    return esp_partition_read((const esp_partition_t *)ctx, addr, dst, len) == ESP_OK ? 0 : -1;
}

static int part_write(void *ctx, uint32_t addr, const void *src, size_t len)
{
    return esp_partition_write((const esp_partition_t *)ctx, addr, src, len) == ESP_OK ? 0 : -1;
}

static int part_erase(void *ctx, uint32_t sector)
{
    return esp_partition_erase_range((const esp_partition_t *)ctx, (size_t)sector * SPI_FLASH_SEC_SIZE,
                                     SPI_FLASH_SEC_SIZE) == ESP_OK
               ? 0
               : -1;
}

esp_err_t gw_flash_bdev(spool_bdev_t *dev)
{
    const esp_partition_t *part = esp_partition_find_first(SPOOL_PARTITION_TYPE, SPOOL_PARTITION_SUBTYPE, "spool");
    if (part == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    dev->sector_size = SPI_FLASH_SEC_SIZE;
    dev->sector_count = (uint32_t)(part->size / SPI_FLASH_SEC_SIZE);
    dev->read = part_read;
    dev->write = part_write;
    dev->erase = part_erase;
    dev->ctx = (void *)part;
    return ESP_OK;
}
