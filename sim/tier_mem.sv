// One tier of the simulated device memory (DRAM or SSD), fed by the DPI image reader.
// Requests carry a byte address and a length; responses return ceil(len / PORT_BYTES) beats of
// data starting at that address, in request order. Timing per request:
//   bandwidth: the tier serves len rounded up to ACCESS_BYTES at BW_X256 / 256 bytes per cycle,
//              one request after another (a token bucket, in 1/256-cycle units);
//   latency:   data is ready no earlier than LATENCY (+ a random 0..extra_delay_max) cycles
//              after the request, and no earlier than its transfer has been served.
// Counters: requests, bytes requested, bytes charged, beats returned, out-of-region reads.
// Fault injection: with truncate_every = N > 0, every Nth response of more than one beat ends
// after its first beat (`last` early, the rest dropped).
module screc_tier_mem #(
    parameter integer REGION = 1,
    parameter integer PORT_BYTES = 64,
    parameter integer ADDR_BITS = 48,
    parameter integer LEN_BITS = 16,
    parameter integer LATENCY = 30,
    parameter longint BW_X256 = 64 * 256,
    parameter integer ACCESS_BYTES = 64,
    parameter integer QUEUE = 256
) (
    input  wire                      clk,
    input  wire                      rst,
    input  wire                      req_valid,
    output wire                      req_ready,
    input  wire [ADDR_BITS-1:0]      req_addr,
    input  wire [LEN_BITS-1:0]       req_len,
    output logic                     resp_valid,
    input  wire                      resp_ready,
    output logic [PORT_BYTES*8-1:0]  resp_data,
    output logic                     resp_last,
    input  wire [31:0]               extra_delay_max,
    input  wire [31:0]               truncate_every,
    output longint                   n_requests,
    output longint                   n_bytes,
    output longint                   n_charged,
    output longint                   n_beats,
    output longint                   n_oob
);
    import "DPI-C" function int screc_image_read(input int region, input longint addr,
                                                 input int nbytes, output bit [1023:0] data);

    longint q_addr [QUEUE];
    int     q_len [QUEUE];
    longint q_ready [QUEUE];
    int head = 0, tail = 0, count = 0;
    longint now = 0;
    longint bw_free = 0;
    int beat = 0;
    longint served = 0;
    bit [1023:0] word;

    assign req_ready = !rst && count < QUEUE;

    always @(posedge clk) begin
        if (rst) begin
            head = 0; tail = 0; count = 0; now = 0; bw_free = 0; beat = 0; served = 0;
            resp_valid <= 1'b0; resp_last <= 1'b0;
            n_requests <= 0; n_bytes <= 0; n_charged <= 0; n_beats <= 0; n_oob <= 0;
        end else begin
            if (req_valid && req_ready) begin
                longint charge, start, done, ready;
                charge = ((longint'(req_len) + ACCESS_BYTES - 1) / ACCESS_BYTES) * ACCESS_BYTES;
                start = (now * 256 > bw_free) ? now * 256 : bw_free;
                bw_free = start + (charge * 65536 + BW_X256 - 1) / BW_X256;
                done = (bw_free + 255) / 256;
                ready = now + LATENCY + (extra_delay_max != 0 ? $urandom_range(extra_delay_max) : 0);
                q_addr[tail] = longint'(req_addr);
                q_len[tail] = int'(req_len);
                q_ready[tail] = (ready > done) ? ready : done;
                tail = (tail + 1) % QUEUE;
                count = count + 1;
                n_requests <= n_requests + 1;
                n_bytes <= n_bytes + longint'(req_len);
                n_charged <= n_charged + charge;
            end
            if (!resp_valid || resp_ready) begin
                if (resp_valid) n_beats <= n_beats + 1;
                if (count > 0 && now >= q_ready[head]) begin
                    int left, nb, oob;
                    bit cut;
                    left = q_len[head] - beat * PORT_BYTES;
                    cut = truncate_every != 0 && beat == 0 && left > PORT_BYTES
                          && (served % truncate_every) == truncate_every - 1;
                    if (cut) left = PORT_BYTES;
                    nb = left < PORT_BYTES ? left : PORT_BYTES;
                    oob = screc_image_read(REGION, q_addr[head] + beat * PORT_BYTES, nb, word);
                    if (oob != 0) n_oob <= n_oob + 1;
                    resp_data <= word[PORT_BYTES*8-1:0];
                    resp_valid <= 1'b1;
                    resp_last <= (left <= PORT_BYTES);
                    if (left <= PORT_BYTES) begin
                        beat = 0;
                        served = served + 1;
                        head = (head + 1) % QUEUE;
                        count = count - 1;
                    end else begin
                        beat = beat + 1;
                    end
                end else begin
                    resp_valid <= 1'b0;
                end
            end
            now = now + 1;
        end
    end
endmodule
