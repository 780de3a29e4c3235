// Simple dual-port RAM: one write port with per-lane enables, one synchronous read port
// (data one cycle after the address). No initial contents: FPGA block RAM powers up as zeros
// and the loaders write every word that is ever read. Written in the template that Vivado and
// Yosys infer block RAM from.
module screc_sdp_ram #(
    parameter integer LANE_BITS = 16,
    parameter integer LANES = 1,
    parameter integer DEPTH = 1024,
    parameter integer ADDR_BITS = 10
) (
    input  wire                         clk,
    input  wire [ADDR_BITS-1:0]         waddr,
    input  wire [LANES*LANE_BITS-1:0]   wdata,
    input  wire [LANES-1:0]             wen,
    input  wire [ADDR_BITS-1:0]         raddr,
    output reg  [LANES*LANE_BITS-1:0]   rdata
);
    reg [LANES*LANE_BITS-1:0] mem [0:DEPTH-1];
    integer lane;
    always @(posedge clk) begin
        for (lane = 0; lane < LANES; lane = lane + 1)
            if (wen[lane])
                mem[waddr][lane*LANE_BITS +: LANE_BITS] <= wdata[lane*LANE_BITS +: LANE_BITS];
        rdata <= mem[raddr];
    end
endmodule
