# The demo's summary as a picture: held-out perplexity per model, one bar each, on the pretraining
# text (FOLDOC: what pruning costs) and on the instruction answers (Jargon: what fine-tuning
# recovers). Called by scripts/demo:
#   gnuplot -e "foldoc='F.tsv'; jargon='J.tsv'; out='summary.png'" scripts/plot-summary.gp
# where each TSV holds "model<TAB>perplexity" lines, top bar first.
set terminal pngcairo size 1000,820 noenhanced font 'DejaVu Sans,11'
set output out
set datafile separator "\t"
set style fill solid 0.85 noborder
set grid xtics lc rgb '#dddddd'
set border 3 lc rgb '#555555'
set xtics nomirror
set ytics nomirror scale 0
set lmargin 40
set rmargin 8
unset key
stats foldoc using 2 name 'F' nooutput  # before any range is set: stats keeps to the ranges
stats jargon using 2 name 'J' nooutput
set multiplot layout 2,1 title "held-out perplexity of the demo's models (lower is better)"

bars(file, colour) = sprintf("'%s' using (0):0:(0):2:($0-0.35):($0+0.35):ytic(1) with boxxyerror lc rgb '%s', '%s' using 2:0:(sprintf('%%.1f', $2)) with labels left offset 0.6,0", file, colour, file)

set yrange [F_records - 0.5:-0.5]
set xrange [0:F_max * 1.15]
set title "FOLDOC dictionary lines (the pretraining text): pruning"
eval "plot " . bars(foldoc, '#7f7f7f')

set yrange [J_records - 0.5:-0.5]
set xrange [0:J_max * 1.15]
set xlabel "perplexity"
set title "Jargon File answers (the instruction data): fine-tuning recovers"
eval "plot " . bars(jargon, '#1f77b4')
unset multiplot
