/*
 * The broker's own ceiling for figure 3: a bare rabbitmq-c publisher with publisher confirms,
 * persistent messages of a given size through a topic exchange into one durable queue (what
 * hookgate's drain does per event), keeping up to W publishes unconfirmed. Prints one JSON line:
 * confirmed messages per second over the run.
 *
 * -t plain (default): a queue without arguments, messages with content type and delivery mode only.
 * -t hookgate: the broker work hookgate asks for, the same as its drain's publishes: the queue
 * declared as hookgate declares its live queues by default (classic, x-max-priority 10,
 * x-queue-version 2, a dead-letter exchange and routing key) and every message with hookgate's
 * properties (message id, timestamp, priority, correlation id, four x-* headers).
 *
 *   amqp_ceiling -u amqp://guest:guest@127.0.0.1:5672/ -s 1400 -d 5 -w 256 [-t hookgate]
 *
 * Built by bench/run.sh: cc bench/amqp_ceiling.c -lrabbitmq
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHANNEL 1
#define EXCHANGE "hookgate.bench.ceiling"
#define QUEUE "hookgate.bench.ceiling"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, amqp_rpc_reply_t r)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        fprintf(stderr, "amqp_ceiling: %s: %s\n", what, amqp_error_string2(r.library_error));
    else
        fprintf(stderr, "amqp_ceiling: %s: broker refused (reply type %d)\n", what, (int)r.reply_type);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *label = "broker ceiling";
    long size = 1400, window = 256;
    double duration = 5;
    int opt, like_hookgate = 0;
    while ((opt = getopt(argc, argv, "u:s:d:w:l:t:")) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 's': size = strtol(optarg, NULL, 10); break;
        case 'd': duration = strtod(optarg, NULL); break;
        case 'w': window = strtol(optarg, NULL, 10); break;
        case 'l': label = optarg; break;
        case 't': like_hookgate = strcmp(optarg, "hookgate") == 0; break;
        default:
            fprintf(stderr, "usage: %s -u AMQP_URL [-s bytes] [-d seconds] [-w window] [-l label] [-t plain|hookgate]\n", argv[0]);
            return 2;
        }
    }
    if (url == NULL || size < 1 || size > (1 << 24) || window < 1 || window > 65536 || duration <= 0 || duration > 600) {
        fprintf(stderr, "amqp_ceiling: bad arguments (need -u; 1 <= -s <= 16 MiB, 1 <= -w <= 65536, 0 < -d <= 600)\n");
        return 2;
    }
    char *urlbuf = strdup(url);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (urlbuf == NULL || amqp_parse_url(urlbuf, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_ceiling: cannot parse %s\n", url);
        return 2;
    }
    /* "amqp://host:port/" names the empty vhost; hookgate (and habit) mean the default "/". */
    if (ci.vhost == NULL || ci.vhost[0] == '\0')
        ci.vhost = "/";
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(c);
    if (sock == NULL || amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp_ceiling: cannot connect to %s:%d\n", ci.host, ci.port);
        return 1;
    }
    die("login", amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password));
    amqp_channel_open(c, CHANNEL);
    die("channel.open", amqp_get_rpc_reply(c));
    amqp_confirm_select(c, CHANNEL);
    die("confirm.select", amqp_get_rpc_reply(c));
    amqp_exchange_declare(c, CHANNEL, amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    die("exchange.declare", amqp_get_rpc_reply(c));
    amqp_table_entry_t qargs[4];
    qargs[0].key = amqp_cstring_bytes("x-dead-letter-exchange");
    qargs[0].value.kind = AMQP_FIELD_KIND_UTF8;
    qargs[0].value.value.bytes = amqp_cstring_bytes(EXCHANGE ".dlx");
    qargs[1].key = amqp_cstring_bytes("x-dead-letter-routing-key");
    qargs[1].value.kind = AMQP_FIELD_KIND_UTF8;
    qargs[1].value.value.bytes = amqp_cstring_bytes(QUEUE ".dlq");
    qargs[2].key = amqp_cstring_bytes("x-max-priority");
    qargs[2].value.kind = AMQP_FIELD_KIND_I32;
    qargs[2].value.value.i32 = 10;
    qargs[3].key = amqp_cstring_bytes("x-queue-version"); /* hookgate's [amqp] queue_version default */
    qargs[3].value.kind = AMQP_FIELD_KIND_I32;
    qargs[3].value.value.i32 = 2;
    amqp_table_t qtable = { .num_entries = like_hookgate ? 4 : 0, .entries = qargs };
    amqp_queue_delete(c, CHANNEL, amqp_cstring_bytes(QUEUE), 0, 0); /* arguments may differ from the last run */
    die("queue.delete", amqp_get_rpc_reply(c));
    amqp_queue_declare(c, CHANNEL, amqp_cstring_bytes(QUEUE), 0, 1, 0, 0, qtable);
    die("queue.declare", amqp_get_rpc_reply(c));
    amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(QUEUE), amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes("#"),
                    amqp_empty_table);
    die("queue.bind", amqp_get_rpc_reply(c));
    amqp_queue_purge(c, CHANNEL, amqp_cstring_bytes(QUEUE));
    die("queue.purge", amqp_get_rpc_reply(c));

    /* A JSON-ish body of the requested size: content does not matter to the broker, size does. */
    char *body = malloc((size_t)size);
    if (body == NULL)
        return 1;
    memset(body, 'x', (size_t)size);
    body[0] = '{';
    body[size - 1] = '}';
    amqp_bytes_t msg = { (size_t)size, body };
    amqp_basic_properties_t props;
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    static const char *const hdr[][2] = {
        { "x-tenant-id", "default" }, { "x-provider", "whatsapp" },
        { "x-event-type", "message.text" }, { "x-priority-class", "medium" },
    };
    amqp_table_entry_t hdrs[4];
    for (int i = 0; i < 4; i++) {
        hdrs[i].key = amqp_cstring_bytes(hdr[i][0]);
        hdrs[i].value.kind = AMQP_FIELD_KIND_UTF8;
        hdrs[i].value.value.bytes = amqp_cstring_bytes(hdr[i][1]);
    }
    char msg_id[64];
    if (like_hookgate) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_PRIORITY_FLAG |
                        AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
        props.priority = 5;
        props.headers.num_entries = 4;
        props.headers.entries = hdrs;
        props.correlation_id = amqp_cstring_bytes("bench-correlation-0123456789abcdef");
    }

    uint64_t sent = 0, confirmed = 0, nacked = 0;
    double t0 = now_s(), t_end = t0 + duration;
    int stop = 0;
    while (!stop || confirmed + nacked < sent) {
        if (!stop && now_s() >= t_end)
            stop = 1;
        if (stop && confirmed + nacked >= sent)
            break;
        while (!stop && sent - confirmed - nacked < (uint64_t)window) {
            if (like_hookgate) {
                /* A unique id per message, as hookgate's event ids are. */
                snprintf(msg_id, sizeof(msg_id), "wamid.bench%020llu", (unsigned long long)sent);
                props.message_id = amqp_cstring_bytes(msg_id);
                props.timestamp = (uint64_t)time(NULL);
            }
            if (amqp_basic_publish(c, CHANNEL, amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes("message.text"), 0,
                                   0, &props, msg) != AMQP_STATUS_OK) {
                fprintf(stderr, "amqp_ceiling: publish failed\n");
                return 1;
            }
            sent++;
        }
        amqp_frame_t f;
        struct timeval tv = { 15, 0 };
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) {
            fprintf(stderr, "amqp_ceiling: no confirm within 15 s (sent %llu, confirmed %llu)\n", (unsigned long long)sent, (unsigned long long)confirmed);
            return 1;
        }
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp_ceiling: %s\n", amqp_error_string2(rc));
            return 1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            /* Tags are 1-based publish counts; "multiple" confirms everything up to the tag. */
            uint64_t upto = a->delivery_tag;
            if (a->multiple)
                confirmed = upto - nacked;
            else
                confirmed++;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            nacked++;
        }
        amqp_maybe_release_buffers(c);
    }
    double secs = now_s() - t0;

    amqp_queue_delete(c, CHANNEL, amqp_cstring_bytes(QUEUE), 0, 0);
    amqp_get_rpc_reply(c);
    amqp_exchange_delete(c, CHANNEL, amqp_cstring_bytes(EXCHANGE), 0);
    amqp_get_rpc_reply(c);
    amqp_channel_close(c, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    printf("{\"label\": \"%s\", \"mode\": \"publish-confirm\", \"topology\": \"%s\", \"size\": %ld, \"window\": %ld, \"seconds\": %.3f, "
           "\"published\": %llu, \"confirmed\": %llu, \"nacked\": %llu, \"rps\": %.1f}\n",
           label, like_hookgate ? "hookgate" : "plain", size, window, secs, (unsigned long long)sent, (unsigned long long)confirmed,
           (unsigned long long)nacked, (double)confirmed / secs);
    free(body);
    free(urlbuf);
    return nacked ? 1 : 0;
}
