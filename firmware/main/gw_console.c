/**
 * @file gw_console.c
 * @brief esp_console REPL commands that edit the NVS configuration. Changes apply after `restart`.
 */
#include "gw_console.h"

#include <stdio.h>
#include <string.h>

#include "esp_console.h"
#include "esp_system.h"

#define VALUE_MAX (4096U)

static const gw_config_t *shown;

static int cmd_config(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("wifi_ssid  = %s\n", shown->wifi_ssid);
    printf("wifi_pass  = %s\n", shown->wifi_pass[0] ? "(set)" : "(empty)");
    printf("gateway_id = %s\n", shown->gateway_id);
    printf("mqtt_uri   = %s\n", shown->mqtt_uri);
    printf("mqtt_pass  = %s\n", shown->mqtt_pass[0] ? "(set)" : "(empty)");
    printf("prefix     = %s\n", shown->prefix);
    printf("ntp_server = %s\n", shown->ntp_server);
    printf("ca_pem     = %s\n", shown->ca_pem ? "(set)" : "(certificate bundle)");
    printf("confirm    = %s\n", shown->confirm);
    return 0;
}

/* `set KEY VALUE...`: the words of VALUE are joined with spaces, and the two characters \n become a newline (for
 * ca_pem; esp_console's argument splitter keeps a backslash that does not precede a space, quote or backslash). */
static int cmd_set(int argc, char **argv)
{
    static char value[VALUE_MAX];
    size_t len = 0;
    esp_err_t err;
    if (argc < 3) {
        printf("usage: set KEY VALUE\n");
        return 1;
    }
    value[0] = '\0';
    for (int i = 2; i < argc; i++) {
        for (const char *p = argv[i]; *p != '\0' && len + 2U < sizeof(value); p++) {
            if (p[0] == '\\' && p[1] == 'n') {
                value[len++] = '\n';
                p++;
            } else {
                value[len++] = *p;
            }
        }
        if (i + 1 < argc && len + 2U < sizeof(value)) {
            value[len++] = ' ';
        }
    }
    value[len] = '\0';
    err = gw_config_set(argv[1], value);
    printf("%s: %s (applies after `restart`)\n", argv[1], err == ESP_OK ? "saved" : esp_err_to_name(err));
    return err == ESP_OK ? 0 : 1;
}

static int cmd_unset(int argc, char **argv)
{
    esp_err_t err;
    if (argc != 2) {
        printf("usage: unset KEY\n");
        return 1;
    }
    err = gw_config_unset(argv[1]);
    printf("%s: %s\n", argv[1], err == ESP_OK ? "back to the menuconfig default" : esp_err_to_name(err));
    return err == ESP_OK ? 0 : 1;
}

static int cmd_restart(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    esp_restart();
    return 0;
}

esp_err_t gw_console_start(const gw_config_t *cfg)
{
    esp_console_repl_t *repl = NULL;
    esp_console_repl_config_t repl_cfg = ESP_CONSOLE_REPL_CONFIG_DEFAULT();
    esp_console_dev_uart_config_t uart_cfg = ESP_CONSOLE_DEV_UART_CONFIG_DEFAULT();
    const esp_console_cmd_t cmds[] = {
        {.command = "config", .help = "Show the configuration (passwords hidden)", .func = cmd_config},
        {.command = "set",
         .help = "set KEY VALUE: wifi_ssid, wifi_pass, gateway_id, mqtt_uri, mqtt_pass, prefix, ntp_server, ca_pem, confirm",
         .func = cmd_set},
        {.command = "unset", .help = "unset KEY: back to the menuconfig default", .func = cmd_unset},
        {.command = "restart", .help = "Restart to apply the configuration", .func = cmd_restart},
    };
    esp_err_t err;
    shown = cfg;
    repl_cfg.prompt = "edge-gw>";
    repl_cfg.max_cmdline_length = VALUE_MAX; /* room for `set ca_pem ...` (default 256) */
    /* The REPL initialises esp_console, so it comes before the commands are registered. */
    err = esp_console_new_repl_uart(&uart_cfg, &repl_cfg, &repl);
    if (err != ESP_OK) {
        return err;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        err = esp_console_cmd_register(&cmds[i]);
        if (err != ESP_OK) {
            return err;
        }
    }
    return esp_console_start_repl(repl);
}
