/**
 * @file gw_flash.h
 * @brief The spool's block device on the `spool` flash partition (partitions.csv).
 */
#pragma once

#include "esp_err.h"
#include "spool.h"

/** Finds the partition and fills `dev` (4096-byte erase sectors). */
esp_err_t gw_flash_bdev(spool_bdev_t *dev);
