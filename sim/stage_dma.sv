// The SmartSSD's peer-to-peer path as the host drives it: NVMe reads whose destination is the
// FPGA's DRAM. Runs the host's staging commands for a batch (sw/lookahead.py; loaded with
// +stage=<file>) against an SSD tier model, at most QUEUE_DEPTH commands outstanding, and
// writes each returned beat into the DRAM image. `start` begins, `done` rises when every
// command's data is in DRAM; `cycles` counts from start to done.
module screc_stage_dma #(
    parameter integer PORT_BYTES = 64,
    parameter integer ADDR_BITS = 48,
    parameter integer LEN_BITS = 16,
    parameter integer QUEUE_DEPTH = 64,
    parameter integer DRAM_REGION = 1
) (
    input  wire                      clk,
    input  wire                      rst,
    input  wire                      start,
    output logic                     done,
    output longint                   cycles,
    output longint                   n_commands,
    output longint                   n_bytes,
    output logic                     req_valid,
    input  wire                      req_ready,
    output logic [ADDR_BITS-1:0]     req_addr,
    output logic [LEN_BITS-1:0]      req_len,
    input  wire                      resp_valid,
    output wire                      resp_ready,
    input  wire [PORT_BYTES*8-1:0]   resp_data,
    input  wire                      resp_last
);
    import "DPI-C" function int screc_stage_open(input string path);
    import "DPI-C" function void screc_stage_command(input int i, output longint src,
                                                     output longint dst, output int nbytes);
    import "DPI-C" function int screc_mem_write(input int region, input longint addr,
                                                input int nbytes, input bit [1023:0] data);
    localparam integer QMAX = 4096;
    int total = 0;
    int issued = 0, retired = 0, beat = 0;
    longint q_dst [QMAX];
    int q_len [QMAX];
    logic running = 1'b0;

    initial begin
        string path;
        if ($value$plusargs("stage=%s", path)) begin
            total = screc_stage_open(path);
            if (total < 0) $fatal(1, "staging commands %s refused (reason above)", path);
        end
    end

    assign resp_ready = 1'b1;

    always_comb begin
        longint src, dst;
        int nb;
        req_valid = running && issued < total && issued - retired < QUEUE_DEPTH;
        req_addr = '0;
        req_len = '0;
        if (req_valid) begin
            screc_stage_command(issued, src, dst, nb);
            req_addr = src[ADDR_BITS-1:0];
            req_len = nb[LEN_BITS-1:0];
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0; done <= 1'b0; cycles <= 0; n_commands <= 0; n_bytes <= 0;
            issued = 0; retired = 0; beat = 0;
        end else begin
            if (start && !running) begin
                running <= 1'b1;
                done <= (total == 0);
                cycles <= 0;
            end
            if (running && !done) cycles <= cycles + 1;
            if (req_valid && req_ready) begin
                longint src, dst;
                int nb;
                screc_stage_command(issued, src, dst, nb);
                q_dst[issued % QMAX] = dst;
                q_len[issued % QMAX] = nb;
                issued = issued + 1;
                n_commands <= n_commands + 1;
            end
            if (resp_valid) begin
                int left, nb;
                longint dst;
                if (retired >= issued) $fatal(1, "staging DMA: a response with no command");
                dst = q_dst[retired % QMAX];
                left = q_len[retired % QMAX] - beat * PORT_BYTES;
                nb = left < PORT_BYTES ? left : PORT_BYTES;
                if (screc_mem_write(DRAM_REGION, dst + beat * PORT_BYTES, nb,
                                    1024'(resp_data)) != 0)
                    $fatal(1, "staging DMA: DRAM write at %0d refused", dst + beat * PORT_BYTES);
                n_bytes <= n_bytes + nb;
                if (resp_last) begin
                    if (left > PORT_BYTES) $fatal(1, "staging DMA: a truncated SSD response");
                    beat = 0;
                    retired = retired + 1;
                    if (retired == total) done <= 1'b1;
                end else begin
                    beat = beat + 1;
                end
            end
        end
    end
endmodule
