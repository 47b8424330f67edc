# scaling.gp - the scaling curves of `make bench` (bench/run.py writes the
# data files and calls: gnuplot -e "dir='...'; out='...'; pins='1cpu 2cpu'").
# Files: dir/<sweep>-<impl>-<pin>.dat with columns x median min max.
set terminal pngcairo size 1400,1000 font "DejaVu Sans,10"
set output out
set multiplot layout 2,2 title "chan (libchan, prebuilt messages) vs raw sendmsg/recvmsg between two processes; bars = min..max of the runs"
set key top left box opaque
set grid
impls = "chan-pre raw"
f(k, i, p) = sprintf("%s/%s-%s-%s.dat", dir, k, i, p)
# chan solid, raw dashed; 1 CPU blue, 2 CPUs red
lc(p) = (p eq "1cpu") ? "#1f5fbf" : "#c0392b"
dt(i) = (i eq "raw") ? 2 : 1
pt(i) = (i eq "raw") ? 6 : 7
t(i, p) = sprintf("%s, %s", i, (p eq "1cpu") ? "both on 1 CPU" : "on 2 CPUs")

set logscale xy
set format x "%.0s%cB"
set xlabel "payload bytes"
set ylabel "µs per round trip"
set title "Round-trip latency vs payload size (request of N bytes, small reply)"
plot for [p in pins] for [i in impls] f("rtt-size", i, p) using 1:2:3:4 with yerrorlines \
     lc rgb lc(p) dt dt(i) pt pt(i) title t(i, p)

set ylabel "MB/s"
set title "One-way throughput vs payload size"
set key top left
plot for [p in pins] for [i in impls] f("oneway-size", i, p) using 1:2:3:4 with yerrorlines \
     lc rgb lc(p) dt dt(i) pt pt(i) title t(i, p)

unset logscale
set format x "%g"
set xrange [-5:260]
set xlabel "descriptors per frame"
# Linear axes: scale to the medians, so one slow run (an error bar) does
# not flatten every curve; such bars are clipped at the top.
top = 0
do for [p in pins] { do for [i in impls] {
    stats f("rtt-fds", i, p) using 2 nooutput
    top = (STATS_max > top) ? STATS_max : top
} }
set yrange [0:top * 1.5]
set ylabel "µs per round trip"
set title "Round-trip latency vs handles in the request (bars clipped at 1.5x the top median)"
plot for [p in pins] for [i in impls] f("rtt-fds", i, p) using 1:2:3:4 with yerrorlines \
     lc rgb lc(p) dt dt(i) pt pt(i) title t(i, p)

top = 0
do for [p in pins] { do for [i in impls] {
    stats f("oneway-fds", i, p) using 2 nooutput
    top = (STATS_max > top) ? STATS_max : top
} }
set yrange [0:top * 1.5]
set ylabel "µs per frame (1 / throughput)"
set title "One-way cost per frame vs handles per frame (bars clipped likewise)"
plot for [p in pins] for [i in impls] f("oneway-fds", i, p) using 1:2:3:4 with yerrorlines \
     lc rgb lc(p) dt dt(i) pt pt(i) title t(i, p)
unset multiplot
